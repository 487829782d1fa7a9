"""FIGA's token sets from the edit script between an original answer and its revision (METHODS.md §4).

The script is ``Levenshtein.editops(original_labels, revised_labels)`` on the
whole label lists (prompt positions hold the same ignore value in both, so
they never differ), as the reference code computes it: other diff tools
break ties differently and would pick other tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import Levenshtein

POSITIVE, NEGATIVE, UNTRAINED = 1, -1, 0


def token_kinds(
    original_labels: Sequence[int], revised_labels: Sequence[int], eos_id: int | None
) -> tuple[list[int], list[int]]:
    """(kinds of the revised tokens, kinds of the original tokens), aligned with the label lists.

    Revised: +1 at the target of every insert and replace, and at the first
    EOS. Original: −1 at the source of every delete and replace, except its
    first EOS (the reference code marks it for the positive side, where the
    original row's weight is 0). Everything else is 0: unchanged tokens are
    not trained on.
    """
    revised = [UNTRAINED] * len(revised_labels)
    original = [UNTRAINED] * len(original_labels)
    for operation, source, target in Levenshtein.editops(list(original_labels), list(revised_labels)):
        if operation != "delete":
            revised[target] = POSITIVE
        if operation != "insert":
            original[source] = NEGATIVE
    if eos_id is not None:
        for kinds, labels, value in ((revised, revised_labels, POSITIVE), (original, original_labels, UNTRAINED)):
            first = next((j for j, token in enumerate(labels) if token == eos_id), None)
            if first is not None:
                kinds[first] = value
    return revised, original
