"""Learning on CPU: GRPO, DAPO and DEPO over seeds, validation accuracy against rollouts and time.

Every run goes through verl's real trainer via the CPU demo launcher (`examples/run_depo_cpu.sh`):
GRPO through verl's ``main_ppo``, DAPO through ``main_ppo`` with verl's dynamic sampling
(``algorithm.filter_groups``), DEPO through ``recipe.depo.main_depo`` with the launcher's shipped
settings, and DEPO with the paper's estimator settings (``EstimatorConfig.paper()``: lr 2e-4, one
update per step on the latest labels, no calibration; warm-up a tenth of the run, as the paper's
100 of 1,000 steps). All on the same data (``--tier-mix``, default three each of the tiers RL
moves and one each of the three it cannot) and warm start (the noisy-warm-start policy,
``recipe/depo/demo/noisy_policy.py``), each seed drawing the same rollouts wherever the policies
agree (the CPU rollout server seeds each request), validated with sampled answers at the training
temperature (mean@VAL_N): by default each checkpoint, saved every ``--test-freq`` steps, and the
warm start are evaluated after the run with ``recipe.depo.evaluate`` (``--validate trainer``: verl's
in-trainer validation, several times slower here). Each run is an ordinary run directory
(``DIR/runs/<method>-s<seed>``) that ``python -m recipe.depo.report`` reads.

    python benchmarks/learning_cpu.py --output /tmp/learning            # 4 methods x 3 seeds
    python benchmarks/learning_cpu.py --quick --output /tmp/learning_q  # GRPO and DEPO, 1 seed
    python benchmarks/learning_cpu.py --methods grpo,depo --seeds 0 --steps 12 --output DIR

It writes ``DIR/learning.json`` (per-run curves and a per-method summary), ``DIR/learning.md``
(the table) and three plots beside it. A run that already finished with the same settings is
reused, so a long comparison can be run in pieces (``--lock FILE`` takes that file's lock around
each run, for a machine shared with other work).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recipe.depo.report.runs import EVAL_STEPS  # noqa: E402  (where the report reads a checkpoint's evaluation)

NOISY_RECIPES = ("finetune", "scratch")  # recipe.depo.demo.noisy_policy.RECIPES, without importing torch
MARKER = "learning_cpu.json"  # the settings this output directory was made with
RUN_DONE = "learning_run.json"  # written into a run directory once its run finished
DATA_SEED = 0  # every run, whatever its seed, trains and validates on the data of this seed

# method -> (label, launcher environment, extra hydra overrides); "{warmup_paper}" is filled in
METHODS: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "grpo": ("GRPO", {"MODE": "grpo"}, []),
    "dapo": ("DAPO", {"MODE": "dapo"}, []),
    "depo": ("DEPO", {"MODE": "depo"}, []),
    "depo_paper": (
        "DEPO (paper estimator)",
        {"MODE": "depo", "EST_LR": "2e-4", "WARMUP": "{warmup_paper}"},
        ["depo.estimator.updates_per_step=1", "depo.estimator.replay_steps=1", "depo.estimator.calibration=none"],
    ),
    # not in the default comparison: Table 1's "+ DAPO w/o dynamic sampling" row (DEPO's filter with
    # zero-advantage groups masked out of the token-mean loss) and its control without the filter
    # (GRPO + masking), which separates what the filter adds from what the masking adds
    "depo_dapo": ("DEPO + masking", {"MODE": "depo"}, ["depo.advantage_filter.mask_zero_adv_groups=true"]),
    "grpo_mask": (
        "GRPO + masking",
        {"MODE": "depo"},
        ["depo.filter.enable=false", "depo.advantage_filter.mask_zero_adv_groups=true"],
    ),
    # not in the default comparison: the scorer's checks (issue 23) on the same task
    # shadow: trains as GRPO, scores what the shipped filter would have rejected
    "depo_shadow": ("DEPO shadow", {"MODE": "depo"}, ["depo.filter.mode=shadow"]),
    # the shipped filter with 10% exploration (the rejection audit's sample) and the drift guard
    # on: rolls out everything while the last 5 steps' calibration error is above 0.15
    "depo_guard": (
        "DEPO + audit + guard",
        {"MODE": "depo", "EXPLORE": "0.1"},
        ["depo.filter.guard_threshold=0.15", "depo.filter.guard_steps=5"],
    ),
}
DEFAULT_METHODS = "grpo,dapo,depo,depo_paper"
QUICK_METHODS = "grpo,depo"


class BenchError(Exception):
    """Bad input or an unusable output directory; the message is the one line the user sees."""


# ---- pure computation (tested without running anything) ----------------------------------------


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise BenchError("--methods is empty: give one or more of " + ", ".join(METHODS))
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise BenchError(f"--methods: unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if len(set(names)) != len(names):
        raise BenchError(f"--methods lists a method twice: {text!r}")
    return names


def parse_seeds(text: str) -> list[int]:
    parts = [s.strip() for s in text.split(",") if s.strip()]
    if not parts:
        raise BenchError("--seeds is empty: give one or more integer seeds, e.g. --seeds 0,1,2")
    try:
        seeds = [int(s) for s in parts]
    except ValueError:
        raise BenchError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def curve_from_run(run) -> list[dict]:
    """One point per validation: cumulative rollouts generated (DAPO's discarded groups included)
    and training seconds up to that step, the validation's mean accuracy over sources (%) and its
    standard error over prompts.

    Validations are those of ``recipe.depo.report.tables.validation_points``: the run's checkpoints
    evaluated after training (``eval_steps/step_N``, see :func:`evaluate_checkpoints`) when the run
    has them, else verl's in-trainer validations (with ``--validate trainer``). Training seconds
    leave out checkpoint saving (verl times it inside ``timing_s/step``): the benchmark saves only
    to evaluate, as the trainer's validation is left out."""
    from recipe.depo.report.tables import _num, step_accounting, validation_points

    rollouts = {0: 0.0}
    seconds = {0: 0.0}
    total_r = total_s = 0.0
    for step, data in sorted(run.steps.items()):
        total_r += step_accounting(run, step, data)["rollouts"]
        total_s += (_num(data, "timing_s/step") or 0.0) - (_num(data, "timing_s/save_checkpoint") or 0.0)
        rollouts[step], seconds[step] = total_r, total_s
    curve = []
    for step, acc, se in validation_points(run):
        upto = max(s for s in rollouts if s <= step)
        curve.append(
            {
                "step": step,
                "rollouts": round(rollouts[upto]),
                "seconds": round(seconds[upto], 2),
                "val_acc": round(acc, 3),
                "val_se": _round(se),
            }
        )
    return curve


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error over seeds (None with one seed)."""
    m = mean(values)
    if len(values) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Seeds' curves averaged point by point over the validation steps every seed has (a seed that
    stopped early limits the mean curve to its steps)."""
    if not curves:
        return []
    common = set.intersection(*({p["step"] for p in c} for c in curves))
    out = []
    for step in sorted(common):
        points = [next(p for p in c if p["step"] == step) for c in curves]
        acc, se = mean_se([p["val_acc"] for p in points])
        out.append(
            {
                "step": step,
                "rollouts": mean(p["rollouts"] for p in points),
                "seconds": mean(p["seconds"] for p in points),
                "val_acc": acc,
                "val_acc_se": se,
            }
        )
    return out


def first_reaching(curve: list[dict], target: float | None, key: str) -> float | None:
    """``key`` (rollouts or seconds) at the first point whose accuracy reaches ``target``; None
    when the curve never does (or there is no target)."""
    if target is None:
        return None
    for point in curve:
        if point["val_acc"] >= target - 1e-9:
            return point[key]
    return None


def summarize(runs: list[dict], accounting: dict[str, list[dict]]) -> tuple[dict[str, dict], float | None]:
    """Per-method summary and the target (GRPO's final mean accuracy; None without GRPO runs).

    ``runs``: ``{"method", "seed", "curve"}`` each; ``accounting``: method -> per-seed
    ``recipe.depo.report`` rollout accounting (``rollouts``, ``useful_groups``, ``zero_adv_share``).
    """
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)
    finals = {m: [r["curve"][-1]["val_acc"] for r in rs if r["curve"]] for m, rs in by_method.items()}
    target = mean(finals["grpo"]) if finals.get("grpo") else None
    summary = {}
    for method, method_runs in by_method.items():
        curves = [r["curve"] for r in method_runs if r["curve"]]
        averaged = mean_curve(curves)
        final_mean, final_se = mean_se(finals[method]) if finals[method] else (None, None)
        first_mean = mean(c[0]["val_acc"] for c in curves) if curves else None
        acct = accounting.get(method, [])
        rollouts = sum(a["rollouts"] for a in acct)
        useful = [a["useful_groups"] for a in acct]
        zero = [a["zero_adv_share"] for a in acct if a.get("zero_adv_share") is not None]
        summary[method] = {
            "seeds": len(method_runs),
            "first_acc_mean": first_mean,
            "final_acc_mean": final_mean,
            "final_acc_se": final_se,
            "rollouts_to_target": first_reaching(averaged, target, "rollouts"),
            "seconds_to_target": first_reaching(averaged, target, "seconds"),
            "useful_groups_per_rollout": (
                sum(useful) / rollouts if acct and rollouts and all(u is not None for u in useful) else None
            ),
            "zero_adv_share": mean(zero) if zero and len(zero) == len(acct) else None,
            "mean_curve": averaged,
        }
    # the rollout goal is a ratio: a method's rollouts to the target over GRPO's own
    base = summary.get("grpo", {}).get("rollouts_to_target")
    for s in summary.values():
        mine = s["rollouts_to_target"]
        s["rollouts_to_target_vs_grpo"] = mine / base if mine is not None and base else None
    return summary, target


# ---- output directory ------------------------------------------------------------------------


def check_output(output: Path, settings: dict) -> None:
    """An output directory is new, empty, or this benchmark's with the same settings; anything
    else is refused before a file is touched."""
    if output.exists() and not output.is_dir():
        raise BenchError(f"--output {output} is a file, not a directory")
    if not output.exists() or not any(output.iterdir()):
        return
    marker = output / MARKER
    if not marker.is_file():
        raise BenchError(
            f"--output {output} holds files that are not this benchmark's (no {MARKER}); "
            "choose a new or empty directory, nothing was written"
        )
    try:
        stored = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BenchError(f"{marker} is not JSON; choose a new or empty --output, nothing was written") from None
    if not isinstance(stored, dict) or stored.get("benchmark") != "learning_cpu":
        raise BenchError(f"{marker} is not a learning_cpu marker; choose a new or empty --output, nothing was written")
    changed = [k for k in ("steps", "run_env") if stored.get(k) != settings.get(k)]
    if changed:
        raise BenchError(
            f"--output {output} holds runs made with other settings ({', '.join(changed)} differ); "
            "choose a new directory, nothing was written"
        )


@contextmanager
def maybe_lock(path: str | None):
    if not path:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- running ---------------------------------------------------------------------------------


def run_env(args: argparse.Namespace) -> dict[str, str]:
    """Launcher knobs shared by every run (part of the marker: runs are reused only when equal).
    With ``--validate checkpoints`` the trainer does not validate (TEST_FREQ=-1) but saves every
    ``--test-freq`` steps, and the checkpoints are evaluated after the run."""
    by_checkpoints = args.validate == "checkpoints"
    env = {
        "POLICY": "noisy",
        "STEPS": str(args.steps),
        "BATCH": str(args.batch),
        "N": str(args.n),
        "TEST_FREQ": "-1" if by_checkpoints else str(args.test_freq),
        "VAL_N": str(args.val_n),
        "VAL_SIZE": str(args.val_size),
        "TRAIN_SIZE": str(args.train_size),
    }
    if by_checkpoints:  # (absent otherwise: --validate trainer runs from before the option stay reusable)
        env["SAVE_FREQ"] = str(args.test_freq)
    if args.lr:
        env["LR"] = args.lr
    # (absent at its default: runs from before the flag stay reusable)
    if args.noisy_recipe != "finetune":
        env["NOISY_RECIPE"] = args.noisy_recipe
    env["TIER_MIX"] = ",".join(str(m) for m in args.tier_mix)
    env["POLL_S"] = args.poll_s
    if args.estimator:  # (absent at its default, as NOISY_RECIPE)
        env["ESTIMATOR"] = args.estimator
    return env


def launcher_knobs() -> list[str]:
    """The environment knobs the demo launcher reads (its ``NAME=${NAME:-...}`` lines), less
    VLLM_VENV, which only says where vLLM lives (the benchmark's runs use the hf rollout)."""
    text = (REPO / "examples" / "run_depo_cpu.sh").read_text()
    found = re.findall(r"^\s*([A-Z][A-Z0-9_]*)=\$\{\1:?-", text, flags=re.MULTILINE)
    return [k for k in dict.fromkeys(found) if k != "VLLM_VENV"]


def run_one(method: str, seed: int, run_dir: Path, data_dir: Path, args: argparse.Namespace) -> dict:
    """Train one (method, seed) through the launcher unless a finished run with the same settings
    is already there; returns the run's ``{"seconds_wall"}`` record."""
    done = run_dir / RUN_DONE
    if done.is_file():
        return json.loads(done.read_text())
    _, method_env, overrides = METHODS[method]
    if args.validate == "checkpoints":
        overrides = [*overrides, "trainer.val_before_train=false"]  # step 0 is the warm start, evaluated too
    knobs = set(launcher_knobs())  # (refused at start; dropped here too, so a run is only its settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_") and k not in knobs}
    env.update(run_env(args))
    warmup_paper = str(max(1, args.steps // 10))
    env.update({k: v.format(warmup_paper=warmup_paper) for k, v in method_env.items()})
    env.update(
        OUT_DIR=str(run_dir),
        DATA_DIR=str(data_dir),
        SEED=str(seed),
        REPORT="0",
        EXPERIMENT=f"learn_{method}_s{seed}",
    )
    # a cap, not a setting: not in run_env, so raising it keeps finished runs reusable
    env["TIMEOUT_S"] = str(args.run_timeout)
    # one data set for every run: the launcher builds it from SEED when absent, so build it first
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "bench.log"
    with maybe_lock(args.lock):
        print(f"[learning] {method} seed {seed} -> {run_dir}", file=sys.stderr, flush=True)
        start = time.time()
        with open(log, "w") as handle:
            proc = subprocess.run(
                ["bash", str(REPO / "examples" / "run_depo_cpu.sh"), *overrides],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        wall = time.time() - start
        if proc.returncode != 0:
            raise BenchError(f"{method} seed {seed} failed (exit {proc.returncode}); see {log}")
        eval_wall = None
        if args.validate == "checkpoints":
            start = time.time()
            evaluate_checkpoints(run_dir, seed, log)
            eval_wall = round(time.time() - start, 1)
    record = {"method": method, "seed": seed, "seconds_wall": round(wall, 1), "eval_seconds_wall": eval_wall}
    done.write_text(json.dumps(record))
    return record


def evaluate_checkpoints(run_dir: Path, seed: int, log: Path) -> None:
    """Evaluate the warm start (step 0) and every checkpoint the run saved, each into
    ``run_dir/eval_steps/step_N``, with ``recipe.depo.evaluate`` (hf backend) at the settings the
    trainer's own validation would have used (``val_kwargs``: n, temperature, top_p; the response
    length; the validation set), sampling seed = the run's seed for every step and method, so
    methods are compared on the same draws. The last step's results also go to ``run_dir/eval``,
    where ``recipe.depo.report`` reads a run's final accuracy. Checkpoints other than the last are
    removed once evaluated (DEPO's hold the estimator's optimizer state, ~0.3 GB each).

    Why not verl's in-trainer validation: on this CPU it costs ~55-75 s per 960 answers, nearly all
    of it verl's agent loop writing each answer to TransferQueue, against 2-4 s per checkpoint here
    (17-26 s for a 30-step run's seven, measured in eval_seconds_wall)."""
    import shutil
    from contextlib import redirect_stderr, redirect_stdout

    from omegaconf import OmegaConf

    from recipe.depo.evaluate.cli import evaluate, parser
    from recipe.depo.evaluate.data import EvalError

    cfg = OmegaConf.load(run_dir / "config.yaml")
    val = cfg.actor_rollout_ref.rollout.val_kwargs
    common = [
        "--data", *([cfg.data.val_files] if isinstance(cfg.data.val_files, str) else list(cfg.data.val_files)),
        "--n", str(val.n),
        "--temperature", str(val.temperature if val.do_sample else 0.0),
        "--top-p", str(val.get("top_p", 1.0)),
        "--max-response-length", str(cfg.data.max_response_length),
        "--seed", str(seed),
        "--backend", "hf",
        "--batch-size", "64",
    ]  # fmt: skip
    ckpt_root = run_dir / "checkpoints"
    saved = sorted(
        (int(p.name.split("_")[-1]), p) for p in ckpt_root.glob("global_step_*") if p.name.split("_")[-1].isdigit()
    )
    if not saved:
        raise BenchError(f"{run_dir}: the run saved no checkpoint to evaluate (SAVE_FREQ)")
    models = [(0, str(cfg.actor_rollout_ref.model.path)), *((step, str(path)) for step, path in saved)]
    with open(log, "a") as handle, redirect_stdout(handle), redirect_stderr(handle):
        for step, model in models:
            out = run_dir / EVAL_STEPS / f"step_{step}"  # step_0: the warm start
            try:
                evaluate(parser().parse_args(["--model", model, "--output", str(out), *common]))
            except EvalError as exc:
                raise BenchError(f"{run_dir}: evaluating step {step}: {exc}") from None
    final = run_dir / EVAL_STEPS / f"step_{saved[-1][0]}"
    final_copy = run_dir / "eval"
    if final_copy.exists():
        shutil.rmtree(final_copy)
    shutil.copytree(final, final_copy, ignore=shutil.ignore_patterns("merged_model", ".*"))
    for _, path in saved[:-1]:
        shutil.rmtree(path)


def build_data(data_dir: Path, args: argparse.Namespace) -> None:
    """One data set for every run (``DATA_SEED``), built once; kept only when it is exactly what
    these settings build (a DataPrepError names the file otherwise)."""
    from data_prep.arithmetic import build
    from data_prep.common import DataPrepError

    try:
        build(data_dir, args.train_size, args.val_size, seed=DATA_SEED, tier_mix=args.tier_mix, reuse=True)
    except DataPrepError as exc:
        raise BenchError(str(exc)) from None


# ---- rendering -------------------------------------------------------------------------------


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "never" if digits >= 0 else "-"
    return f"{value:,.{digits}f}"


def render(result: dict, settings: dict) -> str:
    lines = [
        "# Learning on CPU: GRPO, DAPO, DEPO",
        "",
        f"Target: GRPO's final mean accuracy = {_fmt(result['target_acc'], 2)}%. "
        "Accuracy: validation mean@VAL_N at the sampling temperature (%), mean ± SE over seeds. "
        "Seconds: training wall-clock (verl's `timing_s/step`, less checkpoint saving).",
        "",
        "| method | seeds | first acc | final acc | rollouts to target | × GRPO's | seconds to target "
        "| useful groups / rollout | zero-adv share | min acc | entropy first → last | one validation's SE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in result["summary"].items():
        se = f" ± {s['final_acc_se']:.2f}" if s["final_acc_se"] is not None else ""
        entropy = s.get("entropy") or {}
        ent = (
            f"{entropy['first']:.3f} → {entropy['last']:.3f}"
            if entropy.get("first") is not None and entropy.get("last") is not None
            else "-"
        )
        lines.append(
            f"| {METHODS[method][0]} | {s['seeds']} | {_fmt(s['first_acc_mean'], 2)} "
            f"| {_fmt(s['final_acc_mean'], 2)}{se} "
            f"| {_fmt(s['rollouts_to_target'], 0)} "
            f"| {_fmt(s.get('rollouts_to_target_vs_grpo'), 2) if s.get('rollouts_to_target_vs_grpo') else '-'} "
            f"| {_fmt(s['seconds_to_target'], 0)} "
            f"| {_fmt(s['useful_groups_per_rollout'], 4) if s['useful_groups_per_rollout'] is not None else '-'} "
            f"| {_fmt(s['zero_adv_share'], 3) if s['zero_adv_share'] is not None else '-'} "
            f"| {_fmt(s.get('min_acc'), 2)} | {ent} | {_fmt(s.get('val_se_max'), 2)} |"
        )
    lines += [
        "",
        "min acc: the lowest validation over the run (mean over seeds), the collapse guard; verl's "
        "`actor/entropy` at the first and last step beside it (per step it also follows the batch's prompts). "
        "One validation's SE: the largest, over the method's validations, of the standard error over "
        "prompts of one measurement (the sampling noise of one point). "
        + (
            "Validations: verl's own, inside the run (`--validate trainer`)."
            if settings.get("validate") == "trainer"
            else "Validations: each saved checkpoint and the warm start (step 0) evaluated after the run with "
            "`recipe.depo.evaluate` (hf backend) at the trainer's validation settings, one sampling seed per "
            "run for every step."
        ),
        "",
        f"Machine: {settings['machine']}. Settings: {json.dumps(settings['run_env'], sort_keys=True)}; "
        f"seeds {settings['seeds']}; command: `{settings['command']}`.",
        "",
        "Plots: `val_vs_rollouts.png`, `val_vs_seconds.png`, `val_vs_step.png` (mean over seeds, band ± SE).",
        "",
    ]
    return "\n".join(lines)


def draw(result: dict, output: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for key, label in (("rollouts", "cumulative rollouts"), ("seconds", "training seconds"), ("step", "step")):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for method, s in result["summary"].items():
            curve = s["mean_curve"]
            if not curve:
                continue
            xs = [p[key] for p in curve]
            ys = [p["val_acc"] for p in curve]
            ax.plot(xs, ys, marker="o", label=METHODS[method][0])
            if all(p["val_acc_se"] is not None for p in curve):
                ax.fill_between(
                    xs,
                    [y - p["val_acc_se"] for y, p in zip(ys, curve)],
                    [y + p["val_acc_se"] for y, p in zip(ys, curve)],
                    alpha=0.2,
                )
        if result["target_acc"] is not None:
            ax.axhline(result["target_acc"], color="grey", linestyle="--", linewidth=0.8, label="target (GRPO final)")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"val_vs_{'step' if key == 'step' else key}.png"
        fig.savefig(output / name)
        plt.close(fig)
        names.append(name)
    return names


def entropy_ends(run) -> tuple[float | None, float | None]:
    from recipe.depo.report.tables import _num

    values = [v for v in (_num(run.steps[s], "actor/entropy") for s in sorted(run.steps)) if v is not None]
    return (values[0], values[-1]) if values else (None, None)


def collect(output: Path, plan: list[tuple[str, int]]) -> dict:
    from recipe.depo.report import read_run
    from recipe.depo.report.runs import ReportError
    from recipe.depo.report.tables import rollout_accounting

    runs, accounting, entropies = [], {}, {}
    for method, seed in plan:
        run_dir = output / "runs" / f"{method}-s{seed}"
        try:
            run = read_run(f"{method}-s{seed}", run_dir)
        except ReportError as exc:
            raise BenchError(str(exc)) from None
        curve = curve_from_run(run)
        runs.append({"method": method, "seed": seed, "run_dir": str(run_dir), "curve": curve})
        acct = rollout_accounting(run)
        accounting.setdefault(method, []).append(acct)
        entropies.setdefault(method, []).append(entropy_ends(run))
    summary, target = summarize(runs, accounting)
    for method, s in summary.items():
        firsts = [a for a, _ in entropies[method] if a is not None]
        lasts = [b for _, b in entropies[method] if b is not None]
        s["entropy"] = {"first": mean(firsts) if firsts else None, "last": mean(lasts) if lasts else None}
        mins = [min(p["val_acc"] for p in r["curve"]) for r in runs if r["method"] == method and r["curve"]]
        s["min_acc"] = mean(mins) if mins else None
        ses = [p["val_se"] for r in runs if r["method"] == method for p in r["curve"] if p.get("val_se") is not None]
        s["val_se_max"] = max(ses) if ses else None
    return {"runs": runs, "summary": summary, "target_acc": target}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/learning_cpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", default=None, help=f"comma-separated, of {', '.join(METHODS)} (default: {DEFAULT_METHODS})"
    )
    parser.add_argument("--seeds", default=None, help="comma-separated integers (default 0,1,2; --quick: 0)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 35; --quick: 10)")
    parser.add_argument("--output", required=True, help="directory for learning.json, learning.md, plots and runs/")
    parser.add_argument("--quick", action="store_true", help="GRPO and DEPO, one seed, fewer steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--test-freq", type=int, default=None, help="validate every N steps (default 1)")
    parser.add_argument(
        "--validate",
        choices=("checkpoints", "trainer"),
        default="checkpoints",
        help="checkpoints: save every --test-freq steps and evaluate them after the run (recipe.depo.evaluate);"
        " trainer: verl's own validation inside the run (several times slower on CPU)",
    )
    parser.add_argument("--val-n", type=int, default=4)
    # 360: at 240 one validation's SE over prompts reached 2.07-2.21 points once accuracy was ~20-28%
    # (docs/compare.md); SE falls as 1 / sqrt(prompts)
    parser.add_argument("--val-size", type=int, default=360)
    parser.add_argument("--train-size", type=int, default=1200)
    parser.add_argument("--lr", default=None, help="actor learning rate (default: the launcher's)")
    parser.add_argument(
        "--tier-mix",
        default="3,3,3,1,1,1",
        help="whole shares per tier of the data (default 3,3,3,1,1,1, the launcher's; 1,1,1,1,1,1: one of each)",
    )
    parser.add_argument(
        "--noisy-recipe",
        default="finetune",
        help="finetune or scratch: how the warm start is built (recipe/depo/demo/noisy_policy.py)",
    )
    parser.add_argument(
        "--estimator",
        default=None,
        help="encoder directory for DEPO's estimator (the launcher's ESTIMATOR; default all-MiniLM-L6-v2);"
        " part of every run's settings",
    )
    parser.add_argument(
        "--poll-s",
        default="0.2",
        help="seconds between verl's replay-buffer looks for finished rollouts (the launcher's POLL_S, default"
        " 0.2; verl's own is 2, longer than a generation round here, so step times measured the sleep)",
    )
    parser.add_argument("--lock", default=None, help="take this file's lock around each run")
    parser.add_argument(
        "--run-timeout",
        type=int,
        default=3600,
        help="seconds one run may take before it is stopped (the demo launcher's own 840 s is for the demo;"
        " a 30-step DAPO run took 11-14 min here)",
    )
    args = parser.parse_args(argv)
    try:
        default_methods, default_seeds = (QUICK_METHODS, "0") if args.quick else (DEFAULT_METHODS, "0,1,2")
        methods = parse_methods(default_methods if args.methods is None else args.methods)
        seeds = parse_seeds(default_seeds if args.seeds is None else args.seeds)
        if args.steps is None:
            # chosen when GRPO's mean gain over three seeds was +9.6 points at 30 steps and still
            # rising on two of them; at 35 the four methods x three seeds took 50.6 min here, and
            # another machine's warm start gained +6.6 (docs/compare.md has both)
            args.steps = 10 if args.quick else 35
        if args.test_freq is None:
            # evaluating a checkpoint's 1,440 sampled answers costs 2-4 s here (verl's in-trainer
            # validation ~55-75 s), so every step: at every 5 steps rollouts-to-target moved in
            # 320-rollout jumps, a quarter of GRPO's, too coarse to tell 0.7x from 0.75x
            args.test_freq = 1
        for flag in ("steps", "batch", "n", "test_freq", "val_n", "val_size", "train_size", "run_timeout"):
            value = getattr(args, flag)
            if value < 1:
                raise BenchError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
        from data_prep.arithmetic import parse_tier_mix
        from data_prep.common import DataPrepError

        try:
            args.tier_mix = parse_tier_mix(args.tier_mix)
        except DataPrepError as exc:
            raise BenchError(str(exc)) from None
        try:
            poll_ok = 0 < float(args.poll_s) < math.inf
        except ValueError:
            poll_ok = False
        if not poll_ok:
            raise BenchError(f"--poll-s must be a positive number of seconds, got {args.poll_s!r}")
        # a knob exported in the shell would reach every run through the inherited environment but
        # not the runs' recorded settings, so results (and reuse) would silently be another setting's
        inherited = [k for k in launcher_knobs() if k in os.environ]
        if inherited:
            raise BenchError(
                f"{', '.join(inherited)} set in the environment: the benchmark sets the launcher's knobs itself"
                " and records them; unset it (an estimator goes in --estimator DIR)"
            )
        if args.estimator is not None:
            if not (Path(args.estimator) / "config.json").is_file():
                raise BenchError(
                    f"--estimator must be an encoder directory holding config.json, got {args.estimator!r}"
                )
            args.estimator = str(Path(args.estimator).resolve())
        if args.noisy_recipe not in NOISY_RECIPES:
            raise BenchError(f"--noisy-recipe must be one of {', '.join(NOISY_RECIPES)}, got {args.noisy_recipe!r}")
        output = Path(args.output)
        settings = {
            "benchmark": "learning_cpu",
            "steps": args.steps,
            "run_env": run_env(args),
            "validate": args.validate,
            "seeds": seeds,
            "methods": methods,
            "machine": machine(),
            "command": "python benchmarks/learning_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        check_output(output, settings)
        output.mkdir(parents=True, exist_ok=True)
        (output / MARKER).write_text(json.dumps(settings, indent=2))
        data_dir = output / "data"
        build_data(data_dir, args)
        plan = [(m, s) for s in seeds for m in methods]
        walls = [run_one(m, s, output / "runs" / f"{m}-s{s}", data_dir, args) for m, s in plan]
        result = collect(output, plan)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["settings"] = settings
    result["wall_seconds"] = {f"{w['method']}-s{w['seed']}": w["seconds_wall"] for w in walls}
    result["eval_wall_seconds"] = {f"{w['method']}-s{w['seed']}": w.get("eval_seconds_wall") for w in walls}
    (output / "learning.json").write_text(json.dumps(result, indent=2))
    (output / "learning.md").write_text(render(result, settings))
    draw(result, output)
    print(render(result, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
