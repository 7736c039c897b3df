"""``python -m recipe.depo.cluster_check [--device cpu] [hydra overrides]``: can this cluster run
the launch it is about to be given, checked on every node before a GPU-hour is spent.

The launchers run it first with the same overrides they give ``recipe.depo.main_depo``
(``CLUSTER_CHECK=false`` skips it). It composes the same config, then, for every alive node of
the running Ray cluster (this machine alone when none is running), runs one task pinned to that
node, in the runtime environment verl's workers will get (verl's defaults plus
``ray_kwargs.ray_init.runtime_env``), and prints one line per check: ``ok`` or what is wrong and
how to fix it. Exit status 1 on any problem, 2 on a usage error.

Per node: the imports the workers need (torch with CUDA, flash-attn, vLLM, verl's pinned
version, ``recipe.depo``, math-verify); the policy model and the estimator backbone resolvable
(a local directory, the HF cache, or a reachable hub); ``trainer.default_local_dir`` and the run
directory shared (a file written on each node is read back here, and this machine's file read
there: the estimator's state is written from the node its worker runs on, so without a shared
filesystem ``depo/`` is published without it and resume fails); free disk for the checkpoints the
run keeps; GPU memory for vLLM's share plus the actor's and the estimator's; and the environment
the workers see (W&B credentials when the wandb logger is on, ``HF_HOME``).

``--device cpu`` is for CPU runs (the tests, ``examples/run_gpu_launcher_on_cpu.sh``): torch
without CUDA is then right, flash-attn is not needed and GPU memory is not checked.

The function that runs on the nodes (``probe_node``) and everything it calls use only the standard
library at module level: it is shipped by value, so it also runs on a node where this package is
missing, and says so.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import shutil
import sys
import uuid

GIB = 1024**3
MARKER_DIR = ".depo_cluster_check"
# Bytes a verl FSDP checkpoint keeps per parameter: fp32 weights (4) + Adam's two moments (8).
CKPT_BYTES_PER_PARAM = 12
# Bytes per parameter on the GPU while training: fp32 weights, fp32 gradients, Adam's moments.
TRAIN_BYTES_PER_PARAM = 16
# A CUDA context and allocator slack per process sharing a GPU (measured figures are 0.5-1 GiB).
CONTEXT_GIB = 1.0
# The estimator's activations for a micro-batch of 8 x 512 tokens of a DistilBERT-sized encoder,
# with the allocator's rounding; released after each update (see estimator_worker.py).
ESTIMATOR_WORKSPACE_GIB = 1.5

FIX_SHARED = (
    "put it on a filesystem shared by every node at the same path (NFS, Lustre, ...): the estimator's state "
    "is written from the node its worker runs on and actor shards from every node, so resume fails otherwise"
)


# ---- on each node (standard library only at module level: shipped by value) ---------------------


def probe_node(plan: dict) -> list[tuple[str, str | None, str]]:
    """All checks of one node: ``(check, problem or None, detail)`` per line."""
    lines: list[tuple[str, str | None, str]] = []
    lines += _probe_imports(plan)
    for label, key in (("policy model", "model"), ("estimator backbone", "backbone")):
        if plan.get(key):
            lines.append(_probe_model(label, plan[key]))
    if plan.get("data_files"):
        lines.append(_probe_data(plan["data_files"]))
    for label, key in (("checkpoint dir", "ckpt_dir"), ("run dir", "run_dir")):
        if plan.get(key):
            lines.append(_probe_shared(label, plan[key], plan["token"]))
    if plan.get("ckpt_dir"):
        lines.append(_probe_disk(plan))
    lines.append(_probe_gpus(plan))
    lines += _probe_env(plan)
    return lines


# module -> the distribution that installs it (its version is the one pip shows)
DISTRIBUTIONS = {"flash_attn": "flash-attn", "recipe.depo": "depo-verl", "math_verify": "math-verify"}


def _import_version(module: str) -> str:
    mod = importlib.import_module(module)
    try:
        from importlib.metadata import version

        return version(DISTRIBUTIONS.get(module, module))
    except Exception:
        return str(getattr(mod, "__version__", "?"))


def _probe_imports(plan: dict) -> list[tuple[str, str | None, str]]:
    same_env = "pip install the same depo-verl[gpu] environment as the head's on this node"
    out = []
    try:
        import torch

        detail = f"torch {torch.__version__}"
        problem = None
        if plan["device"] == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            detail += f", CUDA {torch.version.cuda}, {count} GPU(s) visible"
            if not torch.cuda.is_available():
                problem = (
                    f"torch {torch.__version__} has no CUDA here (build {torch.version.cuda}): install a "
                    "CUDA build of torch (docs/gpu.md) and check nvidia-smi"
                )
            elif count < plan["gpus_per_node"]:
                problem = (
                    f"{count} GPU(s) visible, trainer.n_gpus_per_node={plan['gpus_per_node']}: check "
                    "CUDA_VISIBLE_DEVICES and the GPUs Ray was started with"
                )
        out.append(("torch", problem, detail))
    except Exception as exc:  # any import failure is this node's problem, not the check's
        out.append(("torch", f"cannot import torch ({type(exc).__name__}: {exc}): {same_env}", ""))
    if plan["device"] == "cuda":
        out.append(
            _probe_import(
                "flash-attn",
                "flash_attn",
                "pip install the gpu extra's flash-attn (docs/gpu.md); it must match this node's torch and CUDA",
            )
        )
    else:
        out.append(("flash-attn", None, "not needed (--device cpu)"))
    if plan["require_vllm"]:
        out.append(_probe_import("vllm", "vllm", same_env))
    else:
        out.append(("vllm", None, "not needed (--require-vllm false)"))
    verl = _probe_import("verl", "verl", same_env)
    if verl[1] is None and plan.get("verl_version") and verl[2] != plan["verl_version"]:
        verl = ("verl", f"verl {verl[2]} here, this depo-verl needs {plan['verl_version']}: {same_env}", verl[2])
    out.append(verl)
    depo = _probe_import("recipe.depo", "recipe.depo", same_env)
    if depo[1] is None and plan.get("depo_version") and depo[2] != plan["depo_version"]:
        depo = ("recipe.depo", f"depo-verl {depo[2]} here, {plan['depo_version']} on the head: {same_env}", depo[2])
    out.append(depo)
    out.append(_probe_import("math-verify", "math_verify", same_env))
    return out


def _probe_import(label: str, module: str, fix: str) -> tuple[str, str | None, str]:
    try:
        return (label, None, _import_version(module))
    except Exception as exc:
        return (label, f"cannot import {module} ({type(exc).__name__}: {exc}): {fix}", "")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _has_weights(folder: str) -> bool:
    names = os.listdir(folder)
    return any(n.endswith((".safetensors", ".bin")) or n.endswith(".safetensors.index.json") for n in names)


def _probe_model(label: str, name: str) -> tuple[str, str | None, str]:
    """A local directory with config and weights, a hub id in the HF cache, or a reachable hub."""
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")) or not _has_weights(expanded):
            return (label, f"{name} exists here but has no config.json or no weights: copy the whole model", "")
        return (label, None, f"{name} (local directory)")
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
    if looks_local:
        return (label, f"{name} does not exist on this node: copy it there or use a shared path", "")
    try:
        from huggingface_hub import try_to_load_from_cache
    except Exception as exc:
        return (label, f"cannot import huggingface_hub ({exc}) to look up {name}", "")
    # from the environment, not huggingface_hub's constants: those were fixed when it was imported
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub"
    )
    config = try_to_load_from_cache(name, "config.json", cache_dir=cache)
    if isinstance(config, str) and _has_weights(os.path.dirname(config)):
        return (label, None, f"{name} (HF cache {cache})")
    where = f"not in the HF cache here ({cache})"
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return (
            label,
            f"{name} {where} and HF_HUB_OFFLINE is set: `huggingface-cli download {name}` on this node, "
            "or point HF_HOME at a shared cache and forward it (FORWARD_ENV)",
            "",
        )
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(name, timeout=10)
    except Exception as exc:
        return (
            label,
            f"{name} {where} and the hub is not reachable ({type(exc).__name__}): download it on this node",
            "",
        )
    return (label, None, f"{name} {where}; the hub is reachable, each worker downloads it at start")


def _probe_data(files: list[str]) -> tuple[str, str | None, str]:
    """verl's task runner, which reads the parquet files, may be placed on any node."""
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        return ("data files", f"{', '.join(missing)} not found on this node: put DATA_DIR on the shared filesystem", "")
    return ("data files", None, f"{len(files)} parquet file(s) found")


def _probe_shared(label: str, folder: str, token: str) -> tuple[str, str | None, str]:
    """Read the driver's marker and write this node's: the driver reads it back (``shared_result``)."""
    marks = os.path.join(folder, MARKER_DIR, token)
    try:
        with open(os.path.join(marks, "driver")) as f:
            seen = f.read() == token
    except OSError:
        seen = False
    try:
        os.makedirs(marks, exist_ok=True)
        with open(os.path.join(marks, _node_id()), "w") as f:
            f.write(token)
    except OSError as exc:
        return (label, f"cannot write to {folder} on this node ({exc.strerror}): create it with write access", "")
    if not seen:
        return (label, f"{folder}: the file the driver wrote there is not visible on this node: {FIX_SHARED}", "")
    return (label, None, f"{folder} (readable here)")


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _probe_disk(plan: dict) -> tuple[str, str | None, str]:
    folder = plan["ckpt_dir"]
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    need = plan.get("ckpt_bytes_needed")
    if need is None:
        return ("disk", None, f"{free / GIB:.0f} GiB free at {plan['ckpt_dir']} (checkpoint size unknown)")
    detail = f"{free / GIB:.0f} GiB free at {plan['ckpt_dir']}, {need / GIB:.0f} GiB needed ({plan['ckpt_need_why']})"
    if free < need:
        return ("disk", f"{detail}: free space, lower trainer.max_actor_ckpt_to_keep or move CKPT_DIR", "")
    return ("disk", None, detail)


def _probe_gpus(plan: dict) -> tuple[str, str | None, str]:
    if plan["device"] != "cuda":
        return ("gpu memory", None, "not checked (--device cpu)")
    try:
        import torch

        gpus = [torch.cuda.mem_get_info(i) for i in range(min(torch.cuda.device_count(), plan["gpus_per_node"]))]
    except Exception as exc:
        return ("gpu memory", f"cannot read GPU memory ({type(exc).__name__}: {exc})", "")
    if not gpus:
        return ("gpu memory", "no GPU visible", "")
    problems, worst = gpu_memory_problems(plan, [(free / GIB, total / GIB) for free, total in gpus], _node_id())
    if problems:
        return ("gpu memory", "; ".join(problems), "")
    return ("gpu memory", None, worst)


def gpu_memory_problems(plan: dict, gpus: list[tuple[float, float]], node_id: str) -> tuple[list[str], str]:
    """GPUs whose free memory (GiB) is below what the run will allocate at vLLM's first wake-up:
    its ``gpu_memory_utilization`` share of the total, the actor's FSDP shard of training state,
    a CUDA context each, and on the estimator's GPU the estimator."""
    problems = []
    worst = ""
    worst_margin = math.inf
    for index, (free, total) in enumerate(gpus):
        parts = {
            f"vLLM {plan['gpu_memory_utilization']:.2f} x {total:.0f}": plan["gpu_memory_utilization"] * total,
            "actor shard": plan["actor_gib_per_gpu"],
            "contexts": 2 * CONTEXT_GIB,
        }
        if plan.get("estimator_gpu") == (node_id, index):
            parts["estimator"] = plan["estimator_gib"] + CONTEXT_GIB
        need = sum(parts.values())
        breakdown = " + ".join(f"{k} {v:.1f}" for k, v in parts.items())
        if free < need:
            problems.append(
                f"GPU {index}: {need:.1f} GiB needed ({breakdown}), {free:.1f} of {total:.0f} GiB free: lower "
                "GPU_MEM_UTIL, offload the actor (PARAM_OFFLOAD/OPTIM_OFFLOAD) or move the estimator "
                "(EST_PLACEMENT=cpu|separate); docs/gpu.md lists each cost"
            )
        elif free - need < worst_margin:
            worst_margin = free - need
            worst = f"tightest GPU {index}: {need:.1f} GiB needed ({breakdown}) of {free:.1f} GiB free"
    return problems, worst


def _probe_env(plan: dict) -> list[tuple[str, str | None, str]]:
    out = []
    hf_home = os.environ.get("HF_HOME")
    if hf_home and not os.path.isdir(hf_home):
        out.append(("HF_HOME", f"HF_HOME={hf_home} does not exist on this node: create it or forward the head's", ""))
    else:
        offline = " (HF_HUB_OFFLINE)" if _truthy(os.environ.get("HF_HUB_OFFLINE")) else ""
        out.append(("HF_HOME", None, (hf_home or "unset, ~/.cache/huggingface") + offline))
    if plan.get("wandb"):
        out.append(_probe_wandb())
    return out


def _probe_wandb() -> tuple[str, str | None, str]:
    mode = (os.environ.get("WANDB_MODE") or "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return ("wandb", None, f"WANDB_MODE={mode}: no credentials needed")
    if os.environ.get("WANDB_API_KEY"):
        return ("wandb", None, "WANDB_API_KEY set in the workers' environment")
    host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0]
    netrc = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        import netrc as netrc_module

        if netrc_module.netrc(netrc).authenticators(host):
            return ("wandb", None, f"credentials for {host} in {netrc}")
    except (OSError, netrc_module.NetrcParseError):
        pass
    return (
        "wandb",
        "the wandb logger is on but the workers here have no W&B credentials (the task runner that logs may "
        "land on any node): `wandb login` on this node, or export WANDB_API_KEY before `ray start` here, or "
        "drop wandb from LOGGERS",
        "",
    )


def _cleanup_markers(folders: list[str], token: str) -> None:
    for folder in folders:
        shutil.rmtree(os.path.join(folder, MARKER_DIR, token), ignore_errors=True)
        try:
            os.rmdir(os.path.join(folder, MARKER_DIR))
        except OSError:
            pass


# ---- on the driver --------------------------------------------------------------------------


def compose_config(overrides: list[str]):
    """The config main_depo would run with these overrides (hydra's own ``hydra.*`` keys included)."""
    from hydra import compose, initialize_config_dir

    import recipe.depo

    config_dir = os.path.join(os.path.dirname(recipe.depo.__file__), "config")
    with initialize_config_dir(config_dir, version_base=None):
        return compose("depo_trainer", overrides=overrides, return_hydra_config=True)


def count_parameters(model: str, causal_lm: bool) -> int:
    """Parameters of ``model`` from its config alone (built on the meta device: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        module = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config)
    return sum(p.numel() for p in module.parameters())


def make_plan(config, device: str, require_vllm: bool) -> dict:
    from omegaconf import OmegaConf

    from recipe.depo.validation import validate

    settings = validate(config)
    trainer = config.trainer
    actor = config.actor_rollout_ref.actor
    loggers = trainer.logger if not isinstance(trainer.logger, str) else [trainer.logger]
    run_dir = OmegaConf.select(config, "hydra.run.dir", default=None)
    plan = {
        "token": uuid.uuid4().hex[:12],
        "device": device,
        "require_vllm": require_vllm,
        "gpus_per_node": int(trainer.n_gpus_per_node),
        "nnodes": int(trainer.nnodes),
        "model": config.actor_rollout_ref.model.path,
        "backbone": settings.estimator.backbone if settings.uses_estimator else None,
        "ckpt_dir": os.path.abspath(trainer.default_local_dir),
        "run_dir": os.path.abspath(run_dir) if run_dir else None,
        "wandb": "wandb" in list(loggers),
        "data_files": _local_data_files(config),
        "gpu_memory_utilization": float(config.actor_rollout_ref.rollout.gpu_memory_utilization),
        "verl_version": _required_verl(),
        "depo_version": _import_version("recipe.depo"),
    }
    notes = []
    try:
        policy = count_parameters(plan["model"], causal_lm=True)
    except Exception as exc:  # reported by the model line of each node; the estimates need it
        policy = None
        notes.append(f"policy size unknown ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
    estimator = 0
    if plan["backbone"]:
        try:
            estimator = count_parameters(plan["backbone"], causal_lm=False)
        except Exception as exc:
            notes.append(f"estimator size unknown ({type(exc).__name__})")
    plan["notes"] = notes
    keep = trainer.get("max_actor_ckpt_to_keep")
    saves = _planned_saves(int(trainer.total_training_steps or 0), int(trainer.save_freq))
    kept = min(keep, saves) if keep else saves
    if policy is not None:
        size = (policy + estimator) * CKPT_BYTES_PER_PARAM
        plan["ckpt_bytes_needed"] = kept * size
        limit = f"max_actor_ckpt_to_keep={keep}" if keep else f"no retention limit, {saves} save(s)"
        plan["ckpt_need_why"] = f"{kept} x {size / GIB:.1f} GiB, {limit}"
        world = int(trainer.nnodes) * int(trainer.n_gpus_per_node)
        offload = (4 + 4 if actor.fsdp_config.get("param_offload") else 0) + (
            8 if actor.fsdp_config.get("optimizer_offload") else 0
        )
        plan["actor_gib_per_gpu"] = policy * (TRAIN_BYTES_PER_PARAM - offload) / max(world, 1) / GIB
    else:
        plan["actor_gib_per_gpu"] = 0.0
    plan["estimator_gib"] = estimator * TRAIN_BYTES_PER_PARAM / GIB + ESTIMATOR_WORKSPACE_GIB
    plan["placement"] = settings.estimator.placement if settings.uses_estimator else None
    return plan


def _local_data_files(config) -> list[str]:
    files = []
    for key in ("data.train_files", "data.val_files"):
        value = _select(config, key)
        for f in [value] if isinstance(value, str) else list(value or []):
            if not str(f).startswith(("hdfs://", "s3://", "gs://", "http://", "https://")):
                files.append(os.path.abspath(os.path.expanduser(str(f))))
    return files


def _select(config, key):
    from omegaconf import OmegaConf

    return OmegaConf.select(config, key, default=None)


def _planned_saves(total_steps: int, save_freq: int) -> int:
    if save_freq <= 0:
        return 1  # verl still saves the last step
    return max(1, total_steps // save_freq + (1 if total_steps % save_freq else 0))


def _required_verl() -> str | None:
    import recipe.depo

    path = os.path.join(os.path.dirname(recipe.depo.__file__), "REQUIRED_VERL.txt")
    spec = open(path).read().strip()
    return spec[2:] if spec.startswith("==") else None


def worker_runtime_env(config) -> dict:
    """The runtime environment verl's ``run_ppo`` gives every worker for this config."""
    from omegaconf import OmegaConf
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    default = get_ppo_ray_runtime_env(config)
    if config.transfer_queue.enable:
        default.setdefault("env_vars", {})["TRANSFER_QUEUE_ENABLE"] = "1"
    ours = OmegaConf.select(config, "ray_kwargs.ray_init.runtime_env", default=None) or {}
    merged = OmegaConf.to_container(OmegaConf.merge(default, ours), resolve=True)
    return {k: v for k, v in merged.items() if v is not None}


def run_checks(plan: dict, runtime_env: dict, address: str | None) -> list[tuple[str, list]]:
    """``[(node label, probe lines)]`` for every alive node, the driver's first."""
    shared = [plan[k] for k in ("ckpt_dir", "run_dir") if plan.get(k)]
    for folder in shared:
        marks = os.path.join(folder, MARKER_DIR, plan["token"])
        os.makedirs(marks, exist_ok=True)
        with open(os.path.join(marks, "driver"), "w") as f:
            f.write(plan["token"])
    try:
        if address is None:
            # no cluster: this machine alone, in this process, with the workers' environment
            saved = dict(os.environ)
            os.environ.update(runtime_env.get("env_vars", {}))
            try:
                plan = {**plan, "estimator_gpu": ("local", 0) if plan.get("placement") == "colocated" else None}
                results = [("this machine (no Ray cluster running)", probe_node(plan))]
            finally:
                os.environ.clear()
                os.environ.update(saved)
        else:
            results = _run_on_nodes(plan, runtime_env, address)
        return results
    finally:
        _cleanup_markers(shared, plan["token"])


def _run_on_nodes(plan: dict, runtime_env: dict, address: str) -> list[tuple[str, list]]:
    import cloudpickle
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level="ERROR")
    try:
        here = ray.get_runtime_context().get_node_id()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        nodes.sort(key=lambda n: n["NodeID"] != here)
        # the estimator's GPU when colocated: the first GPU of the actor pool's first bundle; Ray
        # places that on the node with the lowest address among those with GPUs, so any may hold it
        probe = ray.remote(num_cpus=0)(probe_node)
        cleanup = ray.remote(num_cpus=0)(_cleanup_markers)
        refs, labels = [], []
        results = []
        if plan["device"] == "cuda":
            results.append(("cluster", [_gpu_nodes_line(plan, nodes)]))
        for node in nodes:
            node_id = node["NodeID"]
            node_plan = {**plan, "estimator_gpu": (node_id, 0) if plan.get("placement") == "colocated" else None}
            if plan["device"] == "cuda" and not node.get("Resources", {}).get("GPU"):
                # verl places no GPU worker there, but reward, agent-loop and task-runner processes
                node_plan.update(device="cpu")
            strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
            refs.append(probe.options(scheduling_strategy=strategy).remote(node_plan))
            role = "driver's node" if node_id == here else "node"
            role += "" if node_plan["device"] == plan["device"] else " (no GPU: CPU processes only)"
            labels.append((node_id, f"{role} {node['NodeManagerAddress']} {node_id[:8]}"))
        for (node_id, label), ref in zip(labels, refs):
            try:
                lines = ray.get(ref, timeout=600)
            except Exception as exc:
                lines = [("probe", f"the check could not run there ({type(exc).__name__}: {exc})", "")]
            lines = [_read_back(plan, line, node_id) for line in lines]
            results.append((label, lines))
        shared = [plan[k] for k in ("ckpt_dir", "run_dir") if plan.get(k)]
        ray.get(
            [
                cleanup.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(
                    shared, plan["token"]
                )
                for n, _ in labels
            ],
            timeout=120,
        )
        return results
    finally:
        ray.shutdown()


def _gpu_nodes_line(plan: dict, nodes: list[dict]) -> tuple[str, str | None, str]:
    wanted, per_node = plan["nnodes"], plan["gpus_per_node"]
    enough = [n for n in nodes if n.get("Resources", {}).get("GPU", 0) >= per_node]
    detail = f"{len(enough)} node(s) with >= {per_node} GPUs in Ray, trainer.nnodes={wanted}"
    if len(enough) < wanted:
        return ("GPU nodes", f"{detail}: start Ray on every GPU node (ray start --address=...) with its GPUs", "")
    return ("GPU nodes", None, detail)


def _read_back(plan: dict, line: tuple, node_id: str) -> tuple:
    """Complete a shared-folder line: the file that node wrote must be visible to the driver."""
    check, problem, detail = line
    folder = {"checkpoint dir": plan.get("ckpt_dir"), "run dir": plan.get("run_dir")}.get(check)
    if folder is None or problem is not None:
        return line
    try:
        with open(os.path.join(folder, MARKER_DIR, plan["token"], node_id)) as f:
            seen = f.read() == plan["token"]
    except OSError:
        seen = False
    if not seen:
        return (check, f"{folder}: a file written there on this node is not visible to the driver: {FIX_SHARED}", "")
    return (check, None, f"{folder} (shared with the driver)")


def report(results: list[tuple[str, list]], notes: list[str], out=sys.stdout) -> int:
    problems = 0
    for label, lines in results:
        for check, problem, detail in lines:
            if problem is None:
                print(f"[{label}] {check}: ok{': ' + detail if detail else ''}", file=out)
            else:
                problems += 1
                print(f"[{label}] {check}: {problem}", file=out)
    for note in notes:
        print(f"[driver] note: {note}", file=out)
    nodes = len(results)
    if problems:
        print(f"cluster check: {problems} problem(s) on {nodes} node(s)", file=out)
        return 1
    print(f"cluster check: all ok on {nodes} node(s)", file=out)
    return 0


def _cluster_address(explicit: str | None) -> str | None:
    """The running cluster to check: --address, RAY_ADDRESS, or a local one ``ray start`` left."""
    if explicit:
        return None if explicit == "local" else explicit
    # what verl's ray.init() will join: RAY_ADDRESS, else the cluster `ray start` left on this machine
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(None)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.depo.cluster_check",
        description="Check every node of the Ray cluster before a launch; the rest are main_depo's hydra overrides.",
    )
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: no CUDA, flash-attn or GPU memory needed"
    )
    parser.add_argument("--require-vllm", type=_bool, default=True, help="vLLM must import on every node")
    parser.add_argument("--address", default=None, help="Ray cluster address; 'local': this machine, no Ray")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("--")]
    if bad:
        parser.error(f"unknown option(s) {bad}")
    from recipe.depo.config_fields import DEPOConfigError

    try:
        config = compose_config(overrides)
        plan = make_plan(config, args.device, args.require_vllm)
    except DEPOConfigError as exc:
        for key, message in exc.problems:
            print(f"cluster check: invalid config: {key}: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # hydra: an unknown key or a malformed override
        print(f"cluster check: cannot compose the config: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    address = _cluster_address(args.address)
    results = run_checks(plan, worker_runtime_env(config), address)
    return report(results, plan["notes"])


if __name__ == "__main__":
    sys.exit(main())
