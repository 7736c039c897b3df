"""report.md from the numbers in report.json (``tables.run_report`` per run)."""

from __future__ import annotations

from typing import Any

from recipe.depo.evaluate.results import display_name, ordered_sets
from recipe.depo.report.tables import LAGS, PHASES

EMPTY = "–"


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return EMPTY
    return format(value, spec)


def _pct(value: Any) -> str:
    return EMPTY if value is None else f"{100 * value:.0f}%"


def _se(r: dict, *path: str) -> Any:
    """The standard error beside a mean over seeds (report.json's ``se``, same shape), or None."""
    se = r.get("se")
    for key in path:
        if not isinstance(se, dict):
            return None
        se = se.get(key)
    return se


def _pm(r: dict, *path: str, spec: str = ".1f", pct: bool = False) -> str:
    """A number of one run, or ``mean ± SE`` over a method's seeds."""
    value: Any = r
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    se = _se(r, *path)
    if pct:
        value, se = (None if value is None else 100 * value), (None if se is None else 100 * se)
        spec = ".0f"
    text = _fmt(value, spec) + ("%" if pct and value is not None else "")
    if se is not None and value is not None:
        text += f" ± {format(se, spec)}" + ("%" if pct else "")
    return text


def _count(r: dict, key: str) -> str:
    """A count of one run (an integer), or ``mean ± SE`` over seeds."""
    if r.get("seeds") and isinstance(r.get(key), (int, float)):
        if _se(r, key) == 0 and float(r[key]).is_integer():
            return str(int(r[key]))  # the same in every seed
        return _pm(r, key)
    return _fmt(r.get(key), "d") if isinstance(r.get(key), int) else _fmt(r.get(key), ".1f")


def _acc_cell(r: dict, name: str) -> str:
    cell = _pm(r, "val", name)
    partial = (r.get("val_partial") or {}).get(name)
    if partial and cell != EMPTY:
        cell += f" (partial: {partial})"
    return cell


def table1(runs: dict[str, dict]) -> list[str]:
    sets = ordered_sets({s for r in runs.values() for s in r["val"] if s != "Avg"})
    lines = [
        "| run | " + " | ".join(display_name(s) for s in sets) + " | Avg | GPU-hours |",
        "|---|" + "---|" * (len(sets) + 2),
    ]
    for name, r in runs.items():
        cells = [_acc_cell(r, s) for s in sets]
        avg = _pm(r, "val", "Avg") + (" (partial)" if r.get("val_partial") and r["val"].get("Avg") is not None else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} | {_pm(r, 'gpu_hours', spec='.3g')} |")
    return lines


def table2(runs: dict[str, dict]) -> list[str]:
    # (column title, run, its phase-times key, its steps-averaged key)
    columns: list[tuple[str, dict, str, str]] = []
    for name, r in runs.items():
        if isinstance(r.get("seconds_per_step_warmup"), dict):
            columns.append((f"{name} warm-up", r, "seconds_per_step_warmup", "warmup_steps_averaged"))
            columns.append((f"{name} filtered", r, "seconds_per_step", "steps_averaged"))
        else:
            columns.append((name, r, "seconds_per_step", "steps_averaged"))
    present = [p for p in PHASES if any(p[0] in (r.get(key) or {}) for _, r, key, _ in columns)]
    lines = ["| phase (s/step) | " + " | ".join(c[0] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for phase, label, _ in present:
        lines.append(f"| {label} | " + " | ".join(_pm(r, key, phase, spec=".2f") for _, r, key, _ in columns) + " |")
    lines.append("| steps averaged | " + " | ".join(_count(r, k) for _, r, _, k in columns) + " |")
    modes = [str(r.get("trainer_mode") or "sync") for _, r, _, _ in columns]
    lines.append("| trainer mode | " + " | ".join(modes) + " |")
    for lag in LAGS:
        if any(lag in (r.get("staleness") or {}) for _, r, _, _ in columns):
            cells = []
            for _, r, _, _ in columns:
                v = (r.get("staleness") or {}).get(lag)
                cells.append(f"{v['mean']:.2f} (max {v['max']:g})" if v else EMPTY)
            lines.append(f"| policy lag {lag.replace('_to_', ' to ')} (versions) | " + " | ".join(cells) + " |")
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
            _count(r, "prompts_rolled_out"),
            _count(r, "rollouts"),
            _count(r, "useful_groups"),
            _pm(r, "rollouts_per_useful_group"),
            _pm(r, "zero_adv_share", pct=True),
        ]
        if dapo:
            cells.append(
                f"{_count(r, 'dapo_zero_signal_groups')} / {_count(r, 'dapo_surplus_groups')}"
                if r.get("dapo_zero_signal_groups") is not None
                else EMPTY
            )
        if depo:
            cells.append(
                f"{_count(r, 'prompts_scanned')} / {_count(r, 'prompts_rejected')}"
                if r.get("prompts_scanned") is not None
                else EMPTY
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def selection(runs: dict[str, dict]) -> list[str]:
    """One row per run whose DEPO filter ran: which selector, in which mode, and how its decisions
    matched the outcomes. Empty when no run filtered."""
    rows = {name: r["selection"] for name, r in runs.items() if isinstance(r.get("selection"), dict)}
    if not rows:
        return []
    head = ["run", "selector", "mode", "calibration error", "shadow: would reject / precision / recall",
            "audit: false rejections / useful among kept", "guard steps"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for name, s in rows.items():
        r = runs[name]
        shadow = " / ".join(_pm(r, "selection", k, pct=True) for k in ("shadow_would_reject", "shadow_precision",
                                                                         "shadow_recall"))  # fmt: skip
        audit = " / ".join(_pm(r, "selection", k, pct=True) for k in ("audit_false_rejection_rate",
                                                                        "audit_kept_useful_rate"))  # fmt: skip
        guard = s.get("guard_steps")
        cells = [name, str(s.get("selector") or EMPTY), str(s.get("mode") or EMPTY),
                 _pm(r, "selection", "calib_error_mean", spec=".3f"), shadow, audit,
                 EMPTY if guard is None else _fmt(guard, ".0f")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict, plots: dict[str, str], skipped_plots: dict[str, str]) -> str:
    runs = report["runs"]
    lines = ["# Run report", ""]
    lines += ["| run | directory | training steps | GPUs | accuracy from |", "|---|---|---|---|---|"]
    for name, r in runs.items():
        gpus = f"{r['gpus']}" + (" (CPU run: trainer processes)" if r.get("device") == "cpu" else "")
        where = r["run_dir"] + (f" ({r['seeds']} seeds)" if r.get("seeds") else "")
        lines.append(f"| {name} | {where} | {r['steps']} | {gpus} | {r['val_source'] or 'no validation'} |")
    ends = [(name, r["val_ends"]) for name, r in runs.items() if r.get("val_ends")]
    if ends:
        lines += ["", "Validation accuracy (%), first → last (± one measurement's SE over prompts, where dumped):"]
        for name, e in ends:
            first, last = e["first"], e["last"]

            def point(p: dict) -> str:
                se = f" ± {p['se']:.1f}" if p.get("se") is not None else ""
                return f"{p['acc']:.1f}{se} (step {p['step']})"

            lines.append(f"- {name}: {point(first)} → {point(last)}")
    lines += ["", "## Table 1: accuracy (%) and GPU-hours", ""] + table1(runs)
    lines += [
        "",
        "Avg is the unweighted mean over the run's sets; GPU-hours = total step seconds x GPUs / 3600. "
        "An empty cell: the run has no accuracy for that set. A method given several run directories "
        "(seeds) shows mean ± standard error over them.",
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
    ]
    chosen = selection(runs)
    if chosen:
        lines += ["## Selection: how the filter's decisions matched the outcomes", ""] + chosen
        lines += [
            "",
            "Calibration error: the mean over steps of the binned gap between predicted and observed mean@k "
            "(docs/selectors.md). Shadow (depo.filter.mode=shadow, nothing filtered): the share of groups the "
            "filter would have rejected, the share of those that had zero advantage (precision) and the share of "
            "zero-advantage groups it would have rejected (recall). Audit (filtering, explore_rate > 0): the share "
            "of groups rolled out despite a rejection that had non-zero advantage, beside the same share among "
            "kept groups. Guard steps: steps the drift guard rolled out everything.",
            "",
        ]
    lines += ["## Plots", ""]
    for title, path in plots.items():
        lines.append(f"- {title}: `{path}`")
    for title, why in skipped_plots.items():
        lines.append(f"- {title}: not drawn ({why})")
    return "\n".join(lines) + "\n"
