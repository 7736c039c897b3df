"""A short, readable summary of a CPU demo run, from verl's own outputs.

Reads the ``file`` logger's JSONL (``VERL_FILE_LOGGER_PATH``: one ``{"step", "data"}`` record per
training step or validation) and, when present, the per-step rollout dumps written with
``trainer.rollout_data_dir`` (one JSONL per step, one line per response with its prompt and score),
from which it counts zero-advantage groups: prompts whose rollouts all got the same reward and so
carry no GRPO gradient.

    python -m recipe.depo.demo.summarize --metrics RUN/metrics.jsonl [--rollouts RUN/rollouts]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

VAL_PREFIX = "val-core/"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            records.append(json.loads(line))
    return records


def validation_accuracy(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``(step, mean validation acc)`` for each validation in the log, in order."""
    points = []
    for record in records:
        data = record.get("data", {})
        accs = [v for k, v in data.items() if k.startswith(VAL_PREFIX) and "/acc/" in k and k.endswith("mean@1")]
        if not accs:
            accs = [v for k, v in data.items() if k.startswith(VAL_PREFIX) and k.endswith("mean@1")]
        if accs:
            points.append((int(record.get("step", 0)), sum(accs) / len(accs)))
    return points


def training_steps(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "training/global_step" in r.get("data", {}) or "timing_s/step" in r.get("data", {})]


def zero_advantage_share(rollout_dir: str | Path) -> list[tuple[int, float, int]]:
    """``(step, share of groups with identical scores, groups)`` per dumped step."""
    out = []
    rollout_dir = Path(rollout_dir)
    if not rollout_dir.is_dir():
        return out
    for file in sorted(rollout_dir.glob("*.jsonl"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
        if not file.stem.isdigit():
            continue
        groups: dict[str, list[float]] = defaultdict(list)
        for line in file.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            uid = str(row.get("uid", ""))
            # verl's dump keys rows as "{prompt uid}_{rollout}_{output}"; fall back to the prompt text
            key = uid.rsplit("_", 2)[0] if uid.count("_") >= 2 else row.get("input", "")
            groups[key].append(float(row.get("score", 0.0)))
        if groups:
            flat = sum(1 for scores in groups.values() if len(scores) > 1 and max(scores) == min(scores))
            out.append((int(file.stem), flat / len(groups), len(groups)))
    return out


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]  # NaN-free: a step scored from carry-over alone has none
    return sum(values) / len(values) if values else float("nan")


def depo_lines(steps: list[dict[str, Any]], group_size: int | None) -> list[str]:
    """What the pre-rollout filter did, from the trainer's ``depo/*`` metrics (empty for GRPO)."""
    data = [r["data"] for r in steps if "depo/prompts_kept" in r["data"]]
    if not data:
        return []
    scanned = sum(d.get("depo/prompts_scanned", 0) for d in data)
    kept = sum(d["depo/prompts_kept"] for d in data)
    lines = [
        f"DEPO prompts      : {scanned:.0f} scored by the estimator, {kept:.0f} rolled out"
        f" ({sum(d.get('depo/prompts_carried_in', 0) for d in data):.0f} of them carried over)"
    ]
    saved = data[-1].get("depo/rollouts_saved", 0.0)  # cumulative over the run
    if group_size:
        spent = kept * group_size
        lines.append(
            f"rollouts          : {spent:.0f} spent, {saved:.0f} saved"
            f" vs plain GRPO on the same prompts ({spent + saved:.0f})"
        )
    warm = [d for d in data if d.get("depo/warmup_active") == 1.0]
    after = [d for d in data if d.get("depo/warmup_active") == 0.0]
    frac = "depo/zero_adv_group_frac"
    parts = []
    if warm:
        parts.append(f"{_mean([d.get(frac, float('nan')) for d in warm]):.0%} in warm-up ({len(warm)} steps)")
    if after:
        parts.append(f"{_mean([d.get(frac, float('nan')) for d in after]):.0%} after ({len(after)} steps)")
    if parts:
        lines.append("zero-adv. share   : " + " -> ".join(parts) + "  (groups with no GRPO signal)")
    calib = [(d["depo/calib_mae"], d.get("depo/spearman", float("nan"))) for d in data if "depo/calib_mae" in d]
    if calib:
        lines.append(
            f"estimator         : |pred - mean@k| {calib[0][0]:.3f} (first step) -> {calib[-1][0]:.3f} (last),"
            f" spearman {calib[-1][1]:.2f} (last)"
        )
    return lines


def summarize(
    metrics_path: str | Path,
    rollout_dir: str | Path | None = None,
    wall_seconds: float | None = None,
    status: int = 0,
    group_size: int | None = None,
) -> str:
    records = read_metrics(metrics_path)
    steps = training_steps(records)
    lines = ["", "================ CPU demo summary ================"]
    lines.append(f"run status        : {'ok' if status == 0 else f'FAILED (exit {status})'}")
    lines.append(f"training steps    : {len(steps)}")
    step_times = [r["data"]["timing_s/step"] for r in steps if "timing_s/step" in r["data"]]
    if step_times:
        steady = step_times[1:] or step_times
        lines.append(f"step time         : first {step_times[0]:.1f}s, then mean {sum(steady) / len(steady):.1f}s")
    scores = [r["data"]["critic/score/mean"] for r in steps if "critic/score/mean" in r["data"]]
    if scores:
        # batches differ in their mix of tiers, so single steps are noisy: average a few
        k = max(1, min(3, len(scores) // 2))
        head, tail = sum(scores[:k]) / k, sum(scores[-k:]) / k
        lines.append(f"train reward      : {head:.3f} (first {k} steps) -> {tail:.3f} (last {k} steps)")
    lines.extend(depo_lines(steps, group_size))
    val = validation_accuracy(records)
    if val:
        lines.append(
            f"validation acc    : {val[0][1]:.3f} (step {val[0][0]}, before training) -> "
            f"{val[-1][1]:.3f} (step {val[-1][0]})"
        )
    else:
        lines.append("validation acc    : (no validation logged)")
    if rollout_dir:
        zero = zero_advantage_share(rollout_dir)
        if zero:
            first, last = zero[0], zero[-1]
            lines.append(
                f"zero-adv. groups  : {first[1]:.0%} of {first[2]} at step {first[0]} -> "
                f"{last[1]:.0%} of {last[2]} at step {last[0]}"
                "  (groups whose rollouts all scored the same: no GRPO signal)"
            )
            total = sum(share * groups for _, share, groups in zero)
            lines.append(
                f"                    {total:.0f} of {sum(g for *_, g in zero)} groups over the run carried no signal"
            )
    if wall_seconds is not None:
        lines.append(f"total wall time   : {wall_seconds / 60:.1f} min")
    lines.append("==================================================")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a CPU demo run from verl's metrics")
    parser.add_argument("--metrics", required=True, help="JSONL written by verl's file logger")
    parser.add_argument("--rollouts", default=None, help="trainer.rollout_data_dir of the run")
    parser.add_argument("--wall-seconds", type=float, default=None)
    parser.add_argument("--status", type=int, default=0)
    parser.add_argument(
        "--group-size", type=int, default=None, help="rollouts per prompt (actor_rollout_ref.rollout.n)"
    )
    args = parser.parse_args(argv)
    print(summarize(args.metrics, args.rollouts, args.wall_seconds, args.status, args.group_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
