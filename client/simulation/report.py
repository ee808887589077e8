"""What a closed-loop run shows: the share of answers that satisfy the hidden preference per policy version and
over wall time, the reward model's held-out accuracy and the KL to the base per round, and how long each round
took from its start until its version served users. Written as ``results.json``, ``report.md`` and ``loop.png``.

Only first answers count towards the satisfied share: regenerations are asked for because a first answer failed,
so counting them would mix in a selection effect.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from client.simulation.users import Turn
from feedback.stats import Rate, rate

WINDOW_S = 300.0


def share(turns: list[Turn]) -> Rate:
    return rate(sum(turn.satisfied for turn in turns), len(turns))


def by_version(turns: list[Turn]) -> dict[str, Rate]:
    versions = sorted({turn.version for turn in turns}, key=lambda v: (v != "base", len(v), v))
    return {version: share([t for t in turns if t.version == version]) for version in versions}


def over_time(turns: list[Turn], started: float, window_s: float) -> list[dict]:
    """The satisfied share in consecutive windows from the start, with the versions that answered in each."""
    if not turns:
        return []
    windows = []
    end = max(turn.at for turn in turns)
    start = started
    while start <= end:
        inside = [t for t in turns if start <= t.at < start + window_s]
        if inside:
            windows.append(
                {
                    "minute": (start - started) / 60,
                    "share": share(inside).model_dump(),
                    "versions": sorted({t.version for t in inside}),
                    "complete": start + window_s <= end,
                }
            )
        start += window_s
    return windows


def round_rows(rounds: list[dict], versions: list[dict]) -> list[dict]:
    """Per training round: its version, verdict, the reward model's held-out accuracy and calibration, PPO's reward
    gain on held-out prompts, KL to the parent and to the base, seconds per stage, and minutes from start to
    serving."""
    audits = {version["id"]: version["audit"] for version in versions}
    rows = []
    for entry in rounds:
        metrics, candidate = entry["metrics"], (entry.get("gate") or {}).get("candidate", {})
        reward_model = metrics["reward_model"]
        began = entry["at"] - metrics.get("seconds", 0.0)
        serving = [a["at"] for a in audits.get(entry["id"], []) if a["state"] in ("canary", "active")]
        rows.append(
            {
                "version": entry["id"],
                "parent": entry["parent"],
                "state": entry["state"],
                "started": began,
                "held_out_accuracy": reward_model.get("held_out_accuracy"),
                "held_out_pairs": reward_model.get("held_out_pairs"),
                "held_out_log_loss": reward_model.get("held_out_log_loss"),
                "ppo_gain": ((metrics.get("gains") or {}).get("ppo") or {}).get("gain"),
                "kl_to_parent": candidate.get("kl_to_parent"),
                "kl_to_base": candidate.get("kl_to_base"),
                "stage_seconds": metrics.get("stage_seconds", {}),
                "minutes_to_serving": (min(serving) - began) / 60 if serving else None,
            }
        )
    return rows


def _stage_seconds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{stage} {value:.0f}" for stage, value in seconds.items()) or "–"


def complete_windows(windows: list[dict]) -> list[dict]:
    """The windows that ran their full length: a last sliver of a window says little (a few answers)."""
    return [w for w in windows if w["complete"]] or windows


def summarize(turns: list[Turn], rounds: list[dict], versions: list[dict], started: float) -> dict:
    first = [turn for turn in turns if not turn.regeneration]
    windows = over_time(first, started, WINDOW_S)
    base = share([t for t in first if t.version == "base"])
    complete = complete_windows(windows)
    final = complete[-1]["share"]["rate"] if complete else None
    return {
        "answers": len(first),
        "by_version": {version: r.model_dump() for version, r in by_version(first).items()},
        "over_time": windows,
        "rounds": round_rows(rounds, versions),
        "base_share": base.rate,
        "final_window_share": final,
        "rise_pp": None if base.rate is None or final is None else 100 * (final - base.rate),
    }


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def markdown(summary: dict, command: str, preference: str) -> str:
    rise = "–" if summary["rise_pp"] is None else f"{summary['rise_pp']:+.1f} pp"
    lines = [
        f"Closed loop, preference `{preference}`",
        "",
        f"```sh\n{command}\n```",
        "",
        f"Satisfied share: base {_percent(summary['base_share'])}, last full {WINDOW_S / 60:.0f} minutes "
        f"{_percent(summary['final_window_share'])}, rise {rise}, over {summary['answers']} first answers.",
        "",
    ]
    lines += _table(
        ["version", "first answers", "satisfied", "95% interval"],
        [
            [v, str(r["trials"]), _percent(r["rate"]), f"{_percent(r['low'])}–{_percent(r['high'])}"]
            for v, r in summary["by_version"].items()
        ],
    )
    lines += [""] + _table(
        ["minute", "satisfied", "answers", "versions"],
        [
            [f"{w['minute']:.0f}", _percent(w["share"]["rate"]), str(w["share"]["trials"]), ", ".join(w["versions"])]
            for w in summary["over_time"]
        ],
    )
    lines += [""] + _table(
        [
            "round → version",
            "verdict",
            "RM held-out accuracy (pairs)",
            "RM log loss",
            "PPO reward gain",
            "KL to parent",
            "KL to base",
            "seconds per stage",
            "minutes to serving",
        ],
        [
            [
                f"{r['version']} (from {r['parent']})",
                r["state"],
                f"{_number(r['held_out_accuracy'])} ({r['held_out_pairs']})",
                _number(r["held_out_log_loss"]),
                _number(r["ppo_gain"]),
                _number(r["kl_to_parent"]),
                _number(r["kl_to_base"]),
                _stage_seconds(r["stage_seconds"]),
                "not served" if r["minutes_to_serving"] is None else f"{r['minutes_to_serving']:.1f}",
            ]
            for r in summary["rounds"]
        ],
    )
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def plot(summary: dict, started: float, path: Path, preference: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (shares, rounds) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    windows = complete_windows(summary["over_time"])
    minutes = [w["minute"] + WINDOW_S / 120 for w in windows]
    rates = [100 * w["share"]["rate"] for w in windows]
    shares.fill_between(
        minutes, [100 * w["share"]["low"] for w in windows], [100 * w["share"]["high"] for w in windows], alpha=0.2
    )
    shares.plot(minutes, rates, marker="o", label="satisfied share (first answers)")
    for row in summary["rounds"]:
        if row["minutes_to_serving"] is not None:
            at = (row["started"] - started) / 60 + row["minutes_to_serving"]
            shares.axvline(at, color="grey", linestyle=":")
            shares.annotate(row["version"], (at, 2), fontsize=8)
    shares.set(xlabel="minutes", ylabel="%", ylim=(0, 100), title=f"Preference {preference}")
    shares.legend(loc="upper left")
    labels = [row["version"] for row in summary["rounds"]]
    rounds.plot(labels, [row["held_out_accuracy"] for row in summary["rounds"]], marker="o", label="RM accuracy")
    rounds.set(xlabel="round (version)", ylabel="held-out accuracy", ylim=(0, 1))
    kl_axis = rounds.twinx()
    kl_axis.plot(labels, [row["kl_to_base"] for row in summary["rounds"]], marker="s", color="tab:red", label="KL")
    kl_axis.set(ylabel="mean KL to base (nats)")
    rounds.legend(loc="lower left")
    kl_axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def write(
    out: Path,
    turns: list[Turn],
    rounds: list[dict],
    versions: list[dict],
    started: float,
    command: str,
    preference: str,
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(turns, rounds, versions, started)
    record = {
        "command": command,
        "preference": preference,
        "started": started,
        **summary,
        "turns": [asdict(turn) for turn in turns],
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    (out / "report.md").write_text(markdown(summary, command, preference))
    plot(summary, started, out / "loop.png", preference)
    return summary
