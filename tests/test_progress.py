"""The stage display: one bar per stage that grows with more of the same work, counts rows finished in worker
threads it was carried into, and leaves uncounted what a caller counts in its own units."""

from __future__ import annotations

import threading

import pytest

from pipeline_lib.core.progress import advance, carry_display, counted_by_caller, phase, stage_display


def run_in_thread(work) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_a_stage_display_counts_its_rows_once(capsys: pytest.CaptureFixture[str]) -> None:
    advance(5)  # outside any stage: nothing to count on, nothing drawn
    with stage_display("sample-policy (round-1/sample-policy)") as display:
        phase("sampling", total=10, done=2)
        advance(3)
        with counted_by_caller():
            advance(100)  # the judge's sampled rows inside a judging shard
        run_in_thread(carry_display(lambda: advance(4)))  # a replica's thread
        run_in_thread(lambda: advance(50))  # a thread nobody carried the display into
        phase("sampling", total=5)  # the next MT-Bench category: the same bar grows
        assert (display.bar.n, display.bar.total) == (9, 15)
        phase("judging", total=3)  # another phase replaces the bar
        assert (display.bar.n, display.bar.total) == (0, 3)
    assert display.bar is None
    err = capsys.readouterr().err
    assert "sample-policy (round-1/sample-policy): sampling:" in err and " 9/15 " in err
    assert "sample-policy (round-1/sample-policy): judging:" in err
