"""compare-methods honours ``--from-stage``: one forcing for the whole comparison, across its contestants."""

import re
from pathlib import Path

import pytest

from flows.cli import main

REPO = Path(__file__).resolve().parents[1]
COMPARE = str(REPO / "configs" / "compare-tiny.yaml")
# Two contestants show the forcing crossing from one to the next; SEFT's reviser would only add minutes.
SMALL = "compare.methods=[{label: sft, method: sft}, {label: spin, method: spin}]"
STAGE_LINE = re.compile(r"^stage (\S+) \((\S+)\): (forced|running|reusing finished output)$")


def test_from_stage_names_a_contestants_stage_or_fails_listing_them(capsys):
    assert main(["compare-methods", COMPARE, "--from-stage", "select-target"]) == 2
    err = capsys.readouterr().err
    # SEFT's own stage is a stage of the comparison, though no compare code names it.
    assert "--from-stage 'select-target' is not a stage" in err and "select-targets" in err


@pytest.mark.integration
# Beside compare-tiny's own test, whose contestants' stages it would otherwise build again. Not on the
# seft-tiny worker, the suite's critical path: their one reviser is trained on this group's worker.
@pytest.mark.xdist_group("compare-tiny")
def test_from_stage_recomputes_the_first_such_stage_and_everything_after_it(capsys, alignflow_home):
    assert main(["run", COMPARE, SMALL]) == 0
    capsys.readouterr()
    assert main(["run", COMPARE, SMALL, "--from-stage", "train-policy"]) == 0
    stages = [m.groups() for line in capsys.readouterr().err.splitlines() if (m := STAGE_LINE.match(line))]

    first = next(i for i, (name, _, _) in enumerate(stages) if name == "train-policy")
    assert {status for _, _, status in stages[:first]} == {"reusing finished output"}
    assert {status for _, _, status in stages[first:]} == {"forced"}
    # SFT's one round, then both of SPIN's iterations: the second contestant is forced too.
    assert [where for name, where, _ in stages if name == "train-policy"] == [
        "round-1/train-policy", "round-1/train-policy", "round-2/train-policy"
    ]  # fmt: skip
