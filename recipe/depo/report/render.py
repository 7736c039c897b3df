"""report.md from the numbers in report.json (``tables.run_report`` per run)."""

from __future__ import annotations

from typing import Any

from recipe.depo.evaluate.results import display_name, ordered_sets
from recipe.depo.report.tables import PHASES

EMPTY = "–"


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return EMPTY
    return format(value, spec)


def _pct(value: Any) -> str:
    return EMPTY if value is None else f"{100 * value:.0f}%"


def table1(runs: dict[str, dict]) -> list[str]:
    sets = ordered_sets({s for r in runs.values() for s in r["val"] if s != "Avg"})
    lines = [
        "| run | " + " | ".join(display_name(s) for s in sets) + " | Avg | GPU-hours |",
        "|---|" + "---|" * (len(sets) + 2),
    ]
    for name, r in runs.items():
        cells = [_fmt(r["val"].get(s)) for s in sets]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {_fmt(r['val'].get('Avg'))} | {_fmt(r['gpu_hours'], '.3g')} |"
        )
    return lines


def table2(runs: dict[str, dict]) -> list[str]:
    columns: list[tuple[str, dict, int]] = []
    for name, r in runs.items():
        if "seconds_per_step_warmup" in r:
            columns.append((f"{name} warm-up", r["seconds_per_step_warmup"], r["warmup_steps_averaged"]))
            columns.append((f"{name} filtered", r["seconds_per_step"], r["steps_averaged"]))
        else:
            columns.append((name, r["seconds_per_step"], r["steps_averaged"]))
    present = [p for p in PHASES if any(p[0] in c for _, c, _ in columns)]
    lines = ["| phase (s/step) | " + " | ".join(c for c, _, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for phase, label, _ in present:
        lines.append(f"| {label} | " + " | ".join(_fmt(c.get(phase), ".2f") for _, c, _ in columns) + " |")
    lines.append("| steps averaged | " + " | ".join(str(k) for _, _, k in columns) + " |")
    return lines


def accounting(runs: dict[str, dict]) -> list[str]:
    dapo = any("dapo_zero_signal_groups" in r for r in runs.values())
    depo = any("prompts_scanned" in r for r in runs.values())
    head = ["run", "prompts rolled out", "rollouts", "useful groups", "rollouts per useful group", "zero-adv. share"]
    if dapo:
        head.append("DAPO discarded: zero-signal / surplus groups")
    if depo:
        head.append("DEPO prompts scanned / rejected")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for name, r in runs.items():
        cells = [
            name,
            str(r["prompts_rolled_out"]),
            str(r["rollouts"]),
            _fmt(r["useful_groups"], "d"),
            _fmt(r["rollouts_per_useful_group"], ".1f"),
            _pct(r["zero_adv_share"]),
        ]
        if dapo:
            cells.append(
                f"{r['dapo_zero_signal_groups']} / {r['dapo_surplus_groups']}"
                if "dapo_zero_signal_groups" in r
                else EMPTY
            )
        if depo:
            cells.append(
                f"{r['prompts_scanned']} / {_fmt(r.get('prompts_rejected'), 'd')}" if "prompts_scanned" in r else EMPTY
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict, plots: dict[str, str], skipped_plots: dict[str, str]) -> str:
    runs = report["runs"]
    lines = ["# Run report", ""]
    lines += ["| run | directory | training steps | GPUs | accuracy from |", "|---|---|---|---|---|"]
    for name, r in runs.items():
        gpus = f"{r['gpus']}" + (" (CPU run: trainer processes)" if r.get("device") == "cpu" else "")
        lines.append(f"| {name} | {r['run_dir']} | {r['steps']} | {gpus} | {r['val_source'] or 'no validation'} |")
    lines += ["", "## Table 1: accuracy (%) and GPU-hours", ""] + table1(runs)
    lines += [
        "",
        "Avg is the unweighted mean over the run's sets; GPU-hours = total step seconds x GPUs / 3600. "
        "An empty cell: the run has no accuracy for that set.",
        "",
        "## Table 2: seconds per training step by phase",
        "",
    ]
    lines += table2(runs)
    lines += [
        "",
        "DEPO's warm-up steps (everything rolled out) are averaged apart. Without a `reward` row the reward "
        "is computed inside generation (verl's reward loop).",
        "",
        "## Rollout accounting",
        "",
    ]
    lines += accounting(runs)
    lines += [
        "",
        "A useful group is a trained prompt group with non-zero advantage; rollouts per useful group is what "
        "one gradient-carrying group cost. Zero-adv. share: zero-advantage groups (incl. DAPO's discarded "
        "zero-signal groups) over all groups rolled out.",
        "",
        "## Plots",
        "",
    ]
    for title, path in plots.items():
        lines.append(f"- {title}: `{path}`")
    for title, why in skipped_plots.items():
        lines.append(f"- {title}: not drawn ({why})")
    return "\n".join(lines) + "\n"
