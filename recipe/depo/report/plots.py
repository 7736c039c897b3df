"""The report's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

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
    fig.savefig(path)
    plt.close(fig)


def draw(series: dict[str, dict], out_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``series``: run name -> ``tables.series(run)``. Returns ``(title -> file name, title -> why
    it was not drawn)``."""
    drawn: dict[str, str] = {}
    skipped: dict[str, str] = {}

    def plot(key: str, curves: list[tuple[str, list, str]], xlabel: str, ylabel: str, why: str) -> None:
        curves = [(label, points, style) for label, points, style in curves if points]
        if not curves:
            skipped[PLOTS[key]] = why
            return
        plt, fig, ax = _figure()
        for label, points, style in curves:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=label, markersize=3)
        _save(plt, fig, ax, out_dir / f"{key}.png", xlabel, ylabel)
        drawn[PLOTS[key]] = f"{key}.png"

    plot(
        "zero_adv_share",
        [(name, s["zero_adv_share"], ".-") for name, s in series.items()],
        "training step",
        "share of rolled-out groups with zero advantage",
        "no run logs depo/zero_adv_group_frac or a rollout dump",
    )
    calibration = []
    for name, s in series.items():
        calibration.append((f"{name} predicted", s["pred"], ".-"))
        calibration.append((f"{name} realised mean@k", s["target"], "x--"))
    plot("estimator_calibration", calibration, "training step", "mean accuracy of the rolled-out batch", "no DEPO run")
    plot(
        "survival_rate",
        [(name, s["survival"], ".-") for name, s in series.items()],
        "training step",
        "share of scored prompts inside the window",
        "no DEPO run",
    )
    plot(
        "val_vs_rollouts",
        [(name, s["val_vs_rollouts"], "o-") for name, s in series.items()],
        "cumulative rollouts spent",
        "validation accuracy (%, mean over sets)",
        "no run logged a validation",
    )
    return drawn, skipped
