"""What counts as a Hugging Face hub id (``org/name``) for models and datasets alike.

The rules are the hub's own: each part is 1 to 96 ASCII letters, digits, ``_``,
``-`` or ``.``, neither starting nor ending with ``-`` or ``.``; ``--`` and
``..`` never appear, and a name never ends in ``.git``. A string that breaks
them cannot be a hub id, so callers can report it as a bad path or reference
instead of sending it to the hub.
"""

import re

_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"(?!.*(?:--|\.\.))(?!.*\.git\Z){_PART}/{_PART}")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is, in full, a hub id of the form ``org/name``."""
    return HUB_ID.fullmatch(text) is not None
