"""Aggregation over seeds (pure: no files, no plotting): mean and standard error of a method's runs.

The standard error is the sample standard deviation (n - 1 in the denominator) over the seeds
divided by sqrt(number of seeds); one seed has no standard error (``None``). A number is
aggregated only when every seed has it: a value some seeds lack is unknown (``None``), never
the mean of the seeds that happen to have it. Curves are the exception (``mean_curve``): each
point is the mean over the seeds that have that point, and says how many did.

Callers outside the report (e.g. a benchmark over seeds) use ``mean_se`` and ``mean_curve``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, standard error)`` of one number over seeds; the error is None for a single seed."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_se: no values")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"mean_se: a value is not finite: {values}")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def mean_curve(curves: Sequence[Mapping[Any, float]]) -> list[dict[str, Any]]:
    """Per x (a step, say) that any curve has, in order: ``{"x", "mean", "se", "n"}`` over the
    curves that have a value there (``n`` of them; ``se`` None when n is 1). A seed missing a
    point lowers that point's ``n`` instead of dropping the point or the seed."""
    xs = sorted({x for curve in curves for x in curve})
    out = []
    for x in xs:
        values = [curve[x] for curve in curves if x in curve and _is_number(curve[x])]
        if not values:
            continue
        mean, se = mean_se(values)
        out.append({"x": x, "mean": mean, "se": se, "n": len(values)})
    return out


def aggregate(values: Sequence[Any]) -> tuple[Any, Any]:
    """``(mean, se)`` of one report.json entry over seeds, recursing into dicts (a key some seed
    lacks is None). Numbers: mean and SE when every seed has one, else ``(None, None)``. Anything
    else (a string, a list): the common value when the seeds agree, else ``(None, None)``."""
    if values and all(isinstance(v, Mapping) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        means, ses = {}, {}
        for key in keys:
            means[key], ses[key] = aggregate([v.get(key) for v in values])
        return means, ses
    if values and all(_is_number(v) for v in values):
        if all(v == values[0] for v in values):  # the same in every seed (steps, GPUs): keep it as it is
            return values[0], (0.0 if len(values) > 1 else None)
        return mean_se(values)
    if values and all(v == values[0] for v in values):
        return values[0], None
    return None, None


def aggregate_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One method's seeds (``tables.run_report`` each) as one report.json entry: every number is
    the mean over seeds, ``se`` holds the standard errors in the same shape, ``per_seed`` the
    seeds' own entries. One seed: its entry unchanged."""
    if len(reports) == 1:
        return dict(reports[0])
    means, ses = aggregate([{k: v for k, v in r.items() if k != "run_dir"} for r in reports])
    return {
        **means,
        "seeds": len(reports),
        "run_dir": ", ".join(str(r["run_dir"]) for r in reports),
        "run_dirs": [str(r["run_dir"]) for r in reports],
        "se": ses,
        "per_seed": [dict(r) for r in reports],
    }
