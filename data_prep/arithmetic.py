"""The CPU demo's task: seeded integer arithmetic with graded difficulty tiers.

Each row is in verl's RL schema (``data_prep.common.make_row``) with ``data_source="arithmetic"``,
the answer an exact integer scored by ``recipe.depo.reward.compute_score`` from ``\\boxed{}``,
``extra_info.question`` the bare problem and ``extra_info.tier`` its tier.

Tiers go from one-digit sums to multi-term multi-digit expressions. The tiny warm-started policy
(``recipe.depo.demo.tiny_policy``) answers without working, digit by digit from the left, so
carries it cannot see ahead make the upper tiers hard: after warm-up the lowest tiers are
(almost) always solved, the highest (almost) never, and the middle ones sometimes -- the mix of
easy, impossible and informative prompts DEPO is meant to sort out.

    python -m data_prep.arithmetic --output DIR --train-size N --val-size M --seed S [--tier-mix 3,3,3,1,1,1]
        [--overwrite | --reuse]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.common import DataPrepError, check_output_dir, check_outputs, make_row, publish_parquets
from recipe.depo.demo.arithmetic_task import (
    TIERS,
    Tier,
    answer_text,
    iter_problems,
    make_problem,
    prompt_for,
    tier_cycle,
)

__all__ = ["TIERS", "Tier", "answer_text", "build", "build_rows", "iter_problems", "make_problem", "prompt_for"]

DATA_SOURCE = "arithmetic"
ABILITY = "arithmetic"


def build_rows(
    split: str, seed: int, count: int, start_index: int = 0, tier_mix: tuple[int, ...] | None = None
) -> list[dict]:
    rows = []
    for offset, (tier, question, value) in enumerate(iter_problems(seed, count, tier_mix=tier_mix)):
        rows.append(
            make_row(
                data_source=DATA_SOURCE,
                prompt_text=prompt_for(question),
                question=question,
                ground_truth=str(value),
                index=start_index + offset,
                split=split,
                ability=ABILITY,
                extra={"tier": tier, "tier_name": TIERS[tier].name},
            )
        )
    return rows


def _bad_tier_mix(given: object) -> DataPrepError:
    return DataPrepError(
        f"--tier-mix must be {len(TIERS)} comma-separated whole numbers, one per tier "
        f"({', '.join(t.name for t in TIERS)}), at least one above 0; got {given!r}"
    )


def parse_tier_mix(text: str) -> tuple[int, ...]:
    """``--tier-mix``: whole shares per tier, comma-separated (``3,3,3,1,1,1``)."""
    try:
        mix = tuple(int(part) for part in text.split(","))
        tier_cycle(mix)
    except ValueError:
        raise _bad_tier_mix(text) from None
    return mix


def build(
    output: str | Path,
    train_size: int,
    val_size: int,
    seed: int,
    overwrite: bool = False,
    tier_mix: tuple[int, ...] | None = None,
    reuse: bool = False,
) -> dict[str, Path]:
    """Write ``train.parquet`` and ``val.parquet`` under ``output``, both or neither; both splits
    cycle through ``tier_mix`` (one of each tier by default).

    ``reuse``: when both files are already there and hold exactly what these settings build, keep
    them (nothing is written); when they hold anything else, or only one is there, refuse naming
    the file and what differs, so data built for other settings never feeds a run silently."""
    for flag, size in (("--train-size", train_size), ("--val-size", val_size)):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise DataPrepError(f"{flag} must be a positive integer, got {size!r}")
    if tier_mix is not None:
        try:
            tier_cycle(tier_mix)
        except ValueError:
            raise _bad_tier_mix(",".join(str(m) for m in tier_mix)) from None
    output = check_output_dir(output)
    paths = {"train": output / "train.parquet", "val": output / "val.parquet"}
    # Distinct seeds per split so validation is not a copy of training prompts.
    rows = {
        "train": build_rows("train", seed, train_size, tier_mix=tier_mix),
        "val": build_rows("val", seed + 1_000_003, val_size, start_index=train_size, tier_mix=tier_mix),
    }
    if reuse and any(path.exists() for path in paths.values()):
        settings = _settings_text(train_size, val_size, seed, tier_mix)
        for split, path in paths.items():
            _check_same(path, rows[split], settings)
        return paths
    check_outputs({f"the {split} output": path for split, path in paths.items()}, overwrite)
    publish_parquets({paths[split]: split_rows for split, split_rows in rows.items()})
    return paths


def _settings_text(train_size: int, val_size: int, seed: int, tier_mix: tuple[int, ...] | None) -> str:
    mix = ",".join(str(m) for m in tier_mix) if tier_mix is not None else "one of each"
    return f"--train-size {train_size} --val-size {val_size} --seed {seed} --tier-mix {mix}"


def _check_same(path: Path, rows: list[dict], settings: str) -> None:
    """Refuse ``path`` unless it holds exactly ``rows`` (compared as Arrow tables after a parquet
    round trip of ``rows``, so the pandas/pyarrow versions that wrote the file do not matter)."""
    import io

    import pandas as pd
    import pyarrow.parquet as pq

    def refuse(what: str) -> DataPrepError:
        return DataPrepError(f"{path} {what}, not the arithmetic data of {settings}; remove it or write elsewhere")

    if not path.is_file():
        raise refuse("is missing while the other split is there")
    try:
        found = pq.read_table(path)
    except Exception as exc:  # a truncated or foreign file: say so, in one line
        raise refuse(f"cannot be read as parquet ({type(exc).__name__})") from None
    if found.num_rows != len(rows):
        raise refuse(f"has {found.num_rows} rows where these settings give {len(rows)}")
    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer, index=False)
    expected = pq.read_table(io.BytesIO(buffer.getvalue()))
    if found.schema.remove_metadata() != expected.schema.remove_metadata():
        raise refuse("has other columns")
    if not found.equals(expected):
        raise refuse("holds other problems")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.arithmetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory for train.parquet and val.parquet")
    parser.add_argument("--train-size", type=int, default=1024)
    parser.add_argument("--val-size", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tier-mix", default=None, help="whole shares per tier, e.g. 3,3,3,1,1,1 (default: one of each)"
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep train/val files already in --output when they are exactly what these settings build; "
        "refuse them when they differ",
    )
    args = parser.parse_args(argv)
    if args.reuse and args.overwrite:
        parser.error("--reuse and --overwrite exclude each other")
    try:
        mix = parse_tier_mix(args.tier_mix) if args.tier_mix is not None else None
        reused = args.reuse and any((Path(args.output) / f"{s}.parquet").exists() for s in ("train", "val"))
        paths = build(
            args.output,
            args.train_size,
            args.val_size,
            args.seed,
            overwrite=args.overwrite,
            tier_mix=mix,
            reuse=args.reuse,
        )
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        print(f"arithmetic {split}: {path}" + (" (reused: built with these settings)" if reused else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
