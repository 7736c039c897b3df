"""The report's PNG plots (matplotlib, Agg backend: no display needed); a method's seeds are drawn
as the mean with a band of ± one standard error."""

from __future__ import annotations

import os
from pathlib import Path

from recipe.depo.report.seeds import mean_curve

PLOTS = {
    "zero_adv_share": "zero-advantage share per step",
    "estimator_calibration": "estimator mean prediction vs realised mean accuracy per step (paper Fig. 4)",
    "survival_rate": "DEPO survival rate per step",
    "val_vs_rollouts": "validation accuracy vs cumulative rollouts",
}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    return plt, fig, ax


def _save(plt, fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    # beside the target, then renamed: an interrupted report never leaves half a PNG
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


Curve = tuple[list[float], list[float], list[float] | None]  # xs, ys, standard errors (None: one seed)


def _by_step(seeds: list[dict], key: str) -> Curve:
    """One per-step curve over a method's seeds: the mean at each step, with its standard error."""
    if len(seeds) == 1:
        points = seeds[0][key]
        return [x for x, _ in points], [y for _, y in points], None
    band = mean_curve([dict(s[key]) for s in seeds])
    return [p["x"] for p in band], [p["mean"] for p in band], [p["se"] or 0.0 for p in band]


def _val_vs_rollouts(seeds: list[dict]) -> Curve:
    """Validation accuracy against cumulative rollouts: seeds are aligned by validation step (their
    rollouts to that step differ), x the mean rollouts, y the mean accuracy with its error."""
    if len(seeds) == 1:
        points = seeds[0]["val_vs_rollouts"]
        return [x for x, _ in points], [y for _, y in points], None
    xs = {p["x"]: p["mean"] for p in mean_curve([{step: at for step, at, _ in s["val_by_step"]} for s in seeds])}
    ys = mean_curve([{step: acc for step, _, acc in s["val_by_step"]} for s in seeds])
    return [xs[p["x"]] for p in ys], [p["mean"] for p in ys], [p["se"] or 0.0 for p in ys]


def draw(series: dict[str, dict | list[dict]], out_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``series``: run name -> ``tables.series(run)``, or a list of them (a method's seeds: a line
    for the mean and a band of ± one standard error). Returns ``(title -> file name, title -> why
    it was not drawn)``. A plot not drawn this time has its PNG from an earlier report removed."""
    seeds = {name: s if isinstance(s, list) else [s] for name, s in series.items()}
    # the legend says which lines are means over seeds
    seeds = {(f"{name} (mean ± SE, {len(s)} seeds)" if len(s) > 1 else name): s for name, s in seeds.items()}
    drawn: dict[str, str] = {}
    skipped: dict[str, str] = {}

    def plot(key: str, curves: list[tuple[str, Curve, str]], xlabel: str, ylabel: str, why: str) -> None:
        curves = [(label, curve, style) for label, curve, style in curves if curve[0]]
        if not curves:
            skipped[PLOTS[key]] = why
            (out_dir / f"{key}.png").unlink(missing_ok=True)
            return
        plt, fig, ax = _figure()
        for label, (xs, ys, ses), style in curves:
            (line,) = ax.plot(xs, ys, style, label=label, markersize=3)
            if ses is not None:
                lo = [y - e for y, e in zip(ys, ses, strict=True)]
                hi = [y + e for y, e in zip(ys, ses, strict=True)]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        _save(plt, fig, ax, out_dir / f"{key}.png", xlabel, ylabel)
        drawn[PLOTS[key]] = f"{key}.png"

    plot(
        "zero_adv_share",
        [(name, _by_step(s, "zero_adv_share"), ".-") for name, s in seeds.items()],
        "training step",
        "share of rolled-out groups with zero advantage",
        "no run logs depo/zero_adv_group_frac or a rollout dump",
    )
    calibration = []
    for name, s in seeds.items():
        calibration.append((f"{name} predicted", _by_step(s, "pred"), ".-"))
        calibration.append((f"{name} realised mean@k", _by_step(s, "target"), "x--"))
    plot("estimator_calibration", calibration, "training step", "mean accuracy of the rolled-out batch", "no DEPO run")
    plot(
        "survival_rate",
        [(name, _by_step(s, "survival"), ".-") for name, s in seeds.items()],
        "training step",
        "share of scored prompts inside the window",
        "no DEPO run",
    )
    plot(
        "val_vs_rollouts",
        [(name, _val_vs_rollouts(s), "o-") for name, s in seeds.items()],
        "cumulative rollouts spent",
        "validation accuracy (%, mean over sets)",
        "no run logged a validation",
    )
    return drawn, skipped
