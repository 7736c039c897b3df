"""CI that catches rot: every slow test runs in .ci/run or has a fast counterpart in the default
suite that fails on the same breakage (read from the test sources and .ci/run, nothing is run)."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# slow test -> the default-suite tests that fail on what would break it, and why that is enough.
FAST_COUNTERPARTS = {
    # GRESO resumed through a second launch: the first launch (SELECTOR=greso through the launcher,
    # no estimator worker, the selector's state in the checkpoint) is in the default suite; each
    # selector's exact checkpoint state (the next step's selection from a restored state) is tested
    # through the real intake; test_depo_e2e launches the same trainer, resumed, for the estimator's
    # selector. Not covered: a breakage only a resumed history selector's launch would show.
    "tests/e2e/test_selectors_e2e.py::test_greso_resumes_its_state": [
        "tests/e2e/test_selectors_e2e.py::test_greso_trains_without_an_estimator",
        "tests/trainer/test_depo_trainer.py::test_shadow_mode_trains_on_verls_own_batches_and_history_selectors_start_no_estimator",
        "tests/trainer/test_depo_selector_intake.py::test_greso_skips_a_prompt_by_its_own_history_without_an_estimator",
        "tests/trainer/test_depo_selector_intake.py::test_checkpoint_state_gives_the_next_steps_selection_exactly",
        "tests/e2e/test_depo_e2e.py::test_depo_across_warmup_then_resume",
    ],
    # The posterior and the hybrid through the real trainer for two steps: the same counterparts as
    # GRESO's run (the hybrid is the estimator's selector plus a history). Not covered: a breakage
    # only the two together would show in a launch.
    "tests/e2e/test_selectors_e2e.py::test_each_other_selector_trains_through_the_real_trainer": [
        "tests/trainer/test_depo_trainer.py::test_shadow_mode_trains_on_verls_own_batches_and_history_selectors_start_no_estimator",
        "tests/e2e/test_depo_e2e.py::test_depo_across_warmup_then_resume",
        "tests/trainer/test_depo_selector_intake.py::test_checkpoint_state_gives_the_next_steps_selection_exactly",
    ],
    # DEPO with verl's vLLM rollout across warm-up (about 5 min): the hf run of the same test checks
    # everything the trainer does after warm-up (the intake is ahead of, and blind to, the rollout);
    # run_depo_qwen7b.sh's two CPU steps take DEPO through verl's vLLM server with weight sync
    # checked every step, and evaluate that run's checkpoint (the vLLM venv's torch) with evaluate's
    # vLLM backend. Not covered: a filtered (post-warm-up) step served by vLLM.
    "tests/e2e/test_depo_e2e.py::test_depo_across_warmup_then_resume": [
        "tests/e2e/test_depo_e2e.py::test_depo_across_warmup_then_resume",  # [hf]
        "tests/launchers/test_gpu_launchers.py::test_gpu_launcher_two_steps_on_cpu",  # [run_depo_qwen7b.sh]
    ],
    # The 11 Table 1 launchers .ci/run does not train: each is the 7B DEPO launcher (trained for two
    # steps in the default suite) or one of the two .ci/run trains, with other knobs (model size,
    # data file, estimator loss weights, DEPO off without dynamic sampling); the compose test builds
    # every launcher's full hydra config and runs DEPO's and verl's start-up checks on it.
    "tests/launchers/test_gpu_launchers.py::test_gpu_launcher_two_steps_on_cpu": [
        "tests/launchers/test_gpu_launchers.py::test_gpu_launcher_two_steps_on_cpu",  # [run_depo_qwen7b.sh]
        "tests/launchers/test_gpu_launchers.py::test_launcher_overrides_compose_and_validate",
    ],
    # DEPO + verl's dynamic sampling launched for real (3-4 min; .ci/run's slow list has no room):
    # verl's own sync replay buffer evicting, refilling through the intake and discarding the surplus
    # on real TransferQueue, with DEPO labelling what it drops, is the trainer test; the launch with
    # the DEPO trainer, test_depo_e2e. Not covered: a breakage only a launch with filter_groups shows.
    "tests/e2e/test_dynamic_sampling_e2e.py::test_depo_with_dynamic_sampling_labels_every_group_verl_drops": [
        "tests/trainer/test_depo_trainer.py::test_dynamic_sampling_labels_the_groups_verl_drops_untrained_once",
        "tests/trainer/test_depo_verl_contract.py::test_replay_buffer_drops_groups_through_the_methods_depo_labels_from",
        "tests/e2e/test_depo_e2e.py::test_depo_across_warmup_then_resume",
    ],
    # Two 10-step runs with three sampled validations each (~10 min) are too long for CI. What they
    # go through is covered apart: the launcher they call (run_depo_cpu.sh, trained in .ci/run's demo
    # and e2e tests), the curve and summary arithmetic on a hand-made run directory, and the flags.
    # Not covered: the benchmark's own loop over runs breaking between those pieces.
    "tests/benchmarks/test_learning_cpu.py::test_quick_comparison_end_to_end": [
        "tests/benchmarks/test_learning_cpu.py::test_curve_from_a_run_directory_counts_dapo_discards_and_step_seconds",
        "tests/benchmarks/test_learning_cpu.py::test_summary_mean_se_target_and_a_method_that_never_reaches_it",
        "tests/benchmarks/test_learning_cpu.py::test_bad_flags_are_one_line_and_write_nothing",
    ],
}


def ci_slow_entries() -> list[str]:
    text = (REPO / ".ci" / "run").read_text()
    block = re.search(r"^CI_SLOW=\((.*?)^\)", text, re.S | re.M)
    assert block, ".ci/run has no CI_SLOW=( ... ) list"
    assert 'pytest -q -m slow "${CI_SLOW[@]}"' in text
    return [line.strip().strip('"') for line in block.group(1).splitlines() if line.strip()]


def _is_slow_mark(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "slow" and "mark" in ast.unparse(node)


def slow_tests() -> set[str]:
    """``file::function`` of every test carrying the slow mark (on itself, its module or some of its
    parameters)."""
    found = set()
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        file_slow = any(
            isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
            and any(_is_slow_mark(x) for x in ast.walk(n.value))
            for n in tree.body
        )
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            if file_slow or any(_is_slow_mark(x) for d in node.decorator_list for x in ast.walk(d)):
                found.add(f"{path.relative_to(REPO)}::{node.name}")
    return found


def defined(test_id: str) -> bool:
    file, _, name = test_id.partition("::")
    path = REPO / file
    if not path.is_file():
        return False
    if not name:
        return True
    name, _, param = name.partition("[")
    names = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
    return name in names and (not param or (REPO / "examples" / param.rstrip("]")).is_file())


def test_every_slow_test_runs_in_ci_or_has_a_fast_counterpart():
    entries = ci_slow_entries()
    missing = [e for e in entries if not defined(e)]
    assert not missing, f".ci/run names tests that do not exist: {missing}"
    slow = slow_tests()
    assert slow, "no slow test found: the scan is broken"
    uncovered = sorted(
        test_id
        for test_id in slow
        if test_id.partition("::")[0] not in entries and test_id not in entries and test_id not in FAST_COUNTERPARTS
    )
    assert not uncovered, f"slow tests neither in .ci/run's CI_SLOW nor with a fast counterpart: {uncovered}"
    for test_id, counterparts in FAST_COUNTERPARTS.items():
        assert test_id in slow, f"{test_id} is not a slow test (any more): drop it from FAST_COUNTERPARTS"
        for counterpart in counterparts:
            assert defined(counterpart), f"fast counterpart {counterpart} of {test_id} does not exist"
