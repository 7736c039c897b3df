"""The report's numbers, computed from run data (pure: no files, no plotting).

Table 1: accuracy per eval set and their unweighted mean ``Avg`` (%), from ``eval/summary.json``
when the run has one, else from the last validation in the metrics (``val-core/<set>/acc/mean@k``),
and GPU-hours = total step seconds x GPUs / 3600.

Table 2: mean seconds per training step by phase (verl's ``timing_s/*`` and DEPO's estimator
timers); DEPO's warm-up steps (no filtering) are averaged apart.

Rollout accounting: per step, the prompt groups generated are the trained batch plus what verl's
DAPO dynamic sampling generated and threw away (``training/filter_groups/evicted_samples``: groups
with no reward variance; ``.../discarded_surplus_samples``: groups beyond the batch), or, for
DEPO, the prompts its intake sent to rollout (``depo/prompts_kept``). A trained group is useful
when its advantage is not zero (``depo/zero_adv_group_frac`` of the trained batch, else the
rollout dump); DAPO's evicted groups are zero-advantage groups too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from statistics import mean
from typing import Any

from recipe.depo.evaluate.results import ordered_sets
from recipe.depo.report.runs import RunData, zero_adv_from_dump
from recipe.depo.report.seeds import mean_se

# (id in report.json, label, metric key)
PHASES = [
    ("estimator_scoring", "estimator scoring", "depo/estimator/predict_time_s"),
    ("generation", "generation (rollout)", "timing_s/gen"),
    ("reward", "reward", "timing_s/reward"),
    ("old_log_prob", "old log-prob", "timing_s/old_log_prob"),
    ("reference", "reference", "timing_s/ref"),
    ("advantage", "advantage", "timing_s/adv"),
    ("actor_update", "actor update", "timing_s/update_actor"),
    ("estimator_update", "estimator update", "timing_s/depo_estimator_update"),
    ("weight_sync", "weight sync", "timing_s/update_weights"),
    ("total", "total step", "timing_s/step"),
]
_VAL_ACC = re.compile(r"^val-core/(.+)/acc/mean@(\d+)$")
DAPO_EVICTED = "training/filter_groups/evicted_samples"
DAPO_SURPLUS = "training/filter_groups/discarded_surplus_samples"
FAILED = "training/rollout_failure/evicted_samples"


def _num(data: dict, key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def validation_accuracy(data: dict) -> tuple[dict[str, float], int | None]:
    """Per data source mean@k accuracy in % from one validation record, and k."""
    accs: dict[str, tuple[int, float]] = {}
    for key, value in data.items():
        match = _VAL_ACC.match(key)
        if match and isinstance(value, (int, float)):
            source, k = match.group(1), int(match.group(2))
            if source not in accs or k > accs[source][0]:
                accs[source] = (k, 100.0 * float(value))
    ks = {k for k, _ in accs.values()}
    return {s: v for s, (_, v) in accs.items()}, (ks.pop() if len(ks) == 1 else None)


def _with_avg(per_set: dict[str, float]) -> dict[str, float]:
    if not per_set:
        return {}
    out = {s: per_set[s] for s in ordered_sets(per_set)}
    out["Avg"] = mean(per_set.values())
    return out


def partial_sets(run: RunData) -> dict[str, str]:
    """Sets of the run's eval summary with results for only part of their queries (a ``--limit``
    run): set -> "queries of total"."""
    if run.eval_summary is None:
        return {}
    return {
        s: f"{v.get('queries')} of {v.get('total')}"
        for s, v in run.eval_summary["sets"].items()
        if v.get("partial") and v.get("acc") is not None
    }


def accuracy(run: RunData) -> tuple[dict[str, float], str | None]:
    """``({set: %, "Avg": %}, where it came from)``; ``({}, None)`` for a run without any."""
    if run.eval_summary is not None:
        sets = {s: float(v["acc"]) for s, v in run.eval_summary["sets"].items() if v.get("acc") is not None}
        n = (run.eval_summary.get("settings") or {}).get("n")
        return _with_avg(sets), f"eval/summary.json (Avg@{n})"  # partial sets: ``partial_sets``
    for step in sorted(run.validations, reverse=True):
        per_set, k = validation_accuracy(run.validations[step])
        if per_set:
            return _with_avg(per_set), f"validation at step {step}" + (f" (mean@{k})" if k else "")
    return {}, None


def gpus(run: RunData, override: int | None) -> int:
    if override is not None:
        return override
    cfg = run.config
    count = int(cfg.get("n_gpus_per_node") or 1) * int(cfg.get("nnodes") or 1)
    if cfg.get("depo_enable") and cfg.get("estimator_placement") == "separate":
        count += 1  # the estimator's own GPU
    return count


def is_warmup(data: dict) -> bool:
    return data.get("depo/warmup_active") == 1.0


def seconds_per_step(steps: list[dict]) -> dict[str, float]:
    out = {}
    for phase, _, key in PHASES:
        values = [v for v in (_num(d, key) for d in steps) if v is not None]
        if values:
            out[phase] = mean(values)
    return out


def step_accounting(run: RunData, step: int, data: dict) -> dict[str, Any]:
    """One training step's groups: generated, trained, zero-advantage, useful (None when unknown)."""
    n, batch = run.config["n"], run.config["train_batch_size"]
    evicted = _num(data, DAPO_EVICTED) or 0.0
    surplus = _num(data, DAPO_SURPLUS) or 0.0
    failed = _num(data, FAILED) or 0.0
    kept = _num(data, "depo/prompts_kept")
    generated = kept if kept is not None else batch + evicted + surplus + failed
    trained = batch if kept is None else min(batch, kept)
    frac = _num(data, "depo/zero_adv_group_frac")
    if frac is None and run.rollout_dir is not None:
        frac = zero_adv_from_dump(run.rollout_dir / f"{step}.jsonl")
    zero = None if frac is None else trained * frac + evicted
    return {
        "generated": generated,
        "rollouts": generated * n,
        "trained": trained,
        "evicted": evicted,
        "surplus": surplus,
        "zero": zero,
        "useful": None if frac is None else trained * (1.0 - frac),
        "zero_share": None if zero is None or not generated else zero / generated,
    }


def rollout_accounting(run: RunData) -> dict[str, Any]:
    per_step = {s: step_accounting(run, s, d) for s, d in sorted(run.steps.items())}
    rows = list(per_step.values())
    known = all(r["useful"] is not None for r in rows) and rows
    rollouts = sum(r["rollouts"] for r in rows)
    useful = sum(r["useful"] for r in rows) if known else None
    out: dict[str, Any] = {
        "prompts_rolled_out": round(sum(r["generated"] for r in rows)),
        "rollouts": round(rollouts),
        "groups_trained": round(sum(r["trained"] for r in rows)),
        "useful_groups": None if useful is None else round(useful),
        "rollouts_per_useful_group": rollouts / useful if useful else None,
        "zero_adv_share": sum(r["zero"] for r in rows) / sum(r["generated"] for r in rows) if known else None,
    }
    if any(r["evicted"] or r["surplus"] for r in rows) or run.config.get("dynamic_sampling"):
        out["dapo_zero_signal_groups"] = round(sum(r["evicted"] for r in rows))
        out["dapo_surplus_groups"] = round(sum(r["surplus"] for r in rows))
    depo = [d for d in run.steps.values() if "depo/prompts_scanned" in d]
    if depo:
        out["prompts_scanned"] = round(sum(_num(d, "depo/prompts_scanned") or 0 for d in depo))
        out["prompts_rejected"] = rejected_prompts(run)
    return out


def _last(run: RunData, key: str) -> float | None:
    """The latest finite value of a metric (the cumulative ones end the run with their total)."""
    for step in sorted(run.steps, reverse=True):
        value = _num(run.steps[step], key)
        if value is not None and math.isfinite(value):
            return value
    return None


def _mean(run: RunData, key: str) -> float | None:
    values = [v for v in (_num(d, key) for d in run.steps.values()) if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def selection_summary(run: RunData) -> dict[str, Any] | None:
    """How the filter's decisions matched the outcomes (recipe/depo/audit.py), for a run whose
    filter ran; None otherwise. Shares over the whole run are the cumulative metrics' last values."""
    if not any("depo/prompts_scanned" in d for d in run.steps.values()):
        return None
    guard = [d for d in run.steps.values() if "depo/guard_active" in d]
    return {
        "selector": run.config.get("selector") or "depo",
        "mode": run.config.get("filter_mode") or "filter",
        "calib_error_mean": _mean(run, "depo/calib_error"),
        "shadow_would_reject": _last(run, "depo/shadow/would_reject_total"),
        "shadow_precision": _last(run, "depo/shadow/precision_total"),
        "shadow_recall": _last(run, "depo/shadow/recall_total"),
        "audit_false_rejection_rate": _last(run, "depo/audit/false_rejection_rate_total"),
        "audit_kept_useful_rate": _last(run, "depo/audit/kept_useful_rate_total"),
        "guard_steps": sum(1 for d in guard if _num(d, "depo/guard_active")) if guard else None,
    }


def rejected_prompts(run: RunData) -> int | None:
    """From ``depo/rollouts_saved`` (cumulative n x rejected prompts): the sum of its increments
    over the logged steps (plus its first value when the log starts at step 1)."""
    n = run.config["n"]
    saved = {s: _num(d, "depo/rollouts_saved") for s, d in run.steps.items()}
    saved = {s: v for s, v in saved.items() if v is not None}
    if not saved:
        return None
    total = saved.get(1, 0.0)
    for step in sorted(saved):
        if step - 1 in saved:
            total += saved[step] - saved[step - 1]
    return round(total / n)


def series(run: RunData) -> dict[str, list[tuple[float, float]]]:
    """Per-step curves for the plots."""
    out: dict[str, list[tuple[float, float]]] = {"zero_adv_share": [], "pred": [], "target": [], "survival": []}
    cumulative = {0: 0.0}
    total = 0.0
    for step, data in sorted(run.steps.items()):
        acct = step_accounting(run, step, data)
        total += acct["rollouts"]
        cumulative[step] = total
        if acct["zero_share"] is not None:
            out["zero_adv_share"].append((step, acct["zero_share"]))
        for name, key in (
            ("pred", "depo/pred_mean"),
            ("target", "depo/target_mean"),
            ("survival", "depo/survival_rate"),
        ):
            value = _num(data, key)
            if value is not None:
                out[name].append((step, value))
    out["val_vs_rollouts"] = []
    out["val_by_step"] = []  # (validation step, cumulative rollouts, accuracy): seeds align by step
    for step, acc, _ in validation_points(run, with_se=False):
        at = cumulative.get(step, max((v for s, v in cumulative.items() if s <= step), default=0.0))
        out["val_vs_rollouts"].append((at, acc))
        out["val_by_step"].append((step, at, acc))
    return out


def validation_points(run: RunData, with_se: bool = True) -> list[tuple[int, float, float | None]]:
    """``(step, accuracy %, its SE over prompts or None)`` per validation, the accuracy a mean over
    sets: the run's checkpoints evaluated after training (``eval_steps/step_N``, what
    ``benchmarks/learning_cpu.py`` writes) when it has them, else verl's in-trainer validations,
    whose SE comes from their dump (``validation/<step>.jsonl``) where the run wrote one."""
    if run.checkpoint_evals:
        return [(step, mean(ev.sets.values()), ev.se) for step, ev in sorted(run.checkpoint_evals.items())]
    points = []
    for step, data in sorted(run.validations.items()):
        per_set, _ = validation_accuracy(data)
        if per_set:
            se = validation_se(Path(run.path) / "validation" / f"{step}.jsonl") if with_se else None
            points.append((step, mean(per_set.values()), se))
    return points


def validation_se(path: Path) -> float | None:
    """Standard error (percentage points) of one validation's accuracy, from verl's dump of it
    (``trainer.validation_data_dir``: one JSON line per answer, with its prompt and ``acc``): the
    answers of one prompt are averaged first, so the SE is over prompts (a prompt's samples are not
    independent draws). None when the dump is missing or has fewer than two prompts."""
    if not path.is_file():
        return None
    per_prompt: dict[str, list[float]] = {}
    with path.open() as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                per_prompt.setdefault(row["input"], []).append(float(row.get("acc", row["score"])))
    means = [mean(v) for v in per_prompt.values()]
    if len(means) < 2:
        return None
    return 100.0 * mean_se(means)[1]


def validation_ends(run: RunData) -> dict[str, dict] | None:
    """The run's first and last validation (:func:`validation_points`): step, accuracy (%, mean over
    sets) and, where known, that measurement's SE over prompts."""
    points = validation_points(run, with_se=False)
    if len(points) < 2:
        return None
    ends = {}
    for end, (step, acc, se) in (("first", points[0]), ("last", points[-1])):
        if se is None and not run.checkpoint_evals:  # read the two dumps needed, not every one
            se = validation_se(Path(run.path) / "validation" / f"{step}.jsonl")
        ends[end] = {"step": step, "acc": acc, "se": se}
    return ends


LAGS = ("score_to_gen", "gen_to_train", "outcome_to_gen")


def staleness(steps: list[dict]) -> dict[str, dict[str, float]]:
    """DEPO's policy-lag metrics over the run: mean of the per-step means, largest per-step max."""
    out = {}
    for lag in LAGS:
        means = [v for v in (_num(d, f"depo/staleness/{lag}_mean") for d in steps) if v is not None and v == v]
        tops = [v for v in (_num(d, f"depo/staleness/{lag}_max") for d in steps) if v is not None and v == v]
        if means:
            out[lag] = {"mean": mean(means), "max": max(tops) if tops else float("nan")}
    return out


def run_report(run: RunData, gpus_override: int | None = None, skip_steps: int = 0) -> dict[str, Any]:
    """Every number of the tables for one run (report.json's ``runs[NAME]``)."""
    ordered = [run.steps[s] for s in sorted(run.steps)]
    counted = ordered[skip_steps:]
    val, val_source = accuracy(run)
    g = gpus(run, gpus_override)
    total_seconds = sum(v for v in (_num(d, "timing_s/step") for d in ordered) if v is not None)
    report: dict[str, Any] = {
        "steps": len(ordered),
        "seconds_per_step": seconds_per_step([d for d in counted if not is_warmup(d)]),
        "steps_averaged": sum(1 for d in counted if not is_warmup(d)),
    }
    warm = [d for d in counted if is_warmup(d)]
    if warm:
        report["seconds_per_step_warmup"] = seconds_per_step(warm)
        report["warmup_steps_averaged"] = len(warm)
    accounting = rollout_accounting(run)
    report.update(
        {
            "rollouts": accounting.pop("rollouts"),
            "useful_groups": accounting.pop("useful_groups"),
            "rollouts_per_useful_group": accounting.pop("rollouts_per_useful_group"),
            "zero_adv_share": accounting.pop("zero_adv_share"),
            "val": val,
            "val_source": val_source,
            "val_partial": partial_sets(run),
            "val_ends": validation_ends(run),
            "gpus": g,
            "device": run.config.get("device"),
            "trainer_mode": run.config.get("trainer_mode") or "sync",
            "staleness": staleness(ordered),
            "gpu_hours": total_seconds * g / 3600.0,
            "n": run.config["n"],
            "train_batch_size": run.config["train_batch_size"],
            **accounting,
            "selection": selection_summary(run),
            "run_dir": str(run.path),
        }
    )
    return report
