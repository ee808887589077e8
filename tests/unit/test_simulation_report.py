"""The closed-loop report's arithmetic: which answers count, and which window the rise is measured on."""

from client.simulation.report import WINDOW_S, complete_windows, summarize
from client.simulation.users import Turn


def turn(at: float, version: str, satisfied: bool, regeneration: bool = False) -> Turn:
    return Turn(
        at=at, user="u", version=version, score=float(satisfied), satisfied=satisfied, regeneration=regeneration
    )


def test_rise_is_measured_on_the_last_full_window_and_first_answers_only() -> None:
    base = [turn(t, "base", t < 100) for t in range(0, 300, 10)]  # 10 of 30 satisfied
    later = [turn(WINDOW_S + t, "v1", t < 200) for t in range(0, 300, 10)]  # 20 of 30 satisfied
    sliver = [turn(2 * WINDOW_S + 1, "v1", False)]  # a last window with one answer: not the one reported
    regenerations = [turn(WINDOW_S + 5, "v1", False, regeneration=True)] * 30
    summary = summarize(base + later + sliver + regenerations, rounds=[], versions=[], started=0.0)
    assert summary["answers"] == 61
    assert abs(summary["base_share"] - 1 / 3) < 1e-9
    assert abs(summary["final_window_share"] - 2 / 3) < 1e-9
    assert abs(summary["rise_pp"] - 100 / 3) < 1e-6
    assert [w["minute"] for w in complete_windows(summary["over_time"])] == [0.0, 5.0]
    assert [w["complete"] for w in summary["over_time"]] == [True, True, False]


def test_a_run_shorter_than_one_window_still_reports_its_only_window() -> None:
    windows = summarize([turn(1, "base", True), turn(2, "base", False)], [], [], started=0.0)["over_time"]
    assert complete_windows(windows) == windows
