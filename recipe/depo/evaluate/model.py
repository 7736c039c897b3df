"""What ``--model`` names: a Hugging Face model directory, a hub id, or a verl checkpoint step folder.

A verl checkpoint (``.../global_step_N``, its ``actor/`` folder, or the checkpoint root, meaning
its latest step) holds the actor as FSDP shards;
it is merged to Hugging Face form by verl's own model merger (``verl.model_merger``, the code
behind ``python -m verl.model_merger merge``) into a folder that is reused by later runs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from recipe.depo.evaluate.data import EvalError
from recipe.depo.fsutil import publish_dir

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_STEP_FOLDER = re.compile(r"^global_step_\d+$")
MERGE_MARKER = "depo_merged_from.json"


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # a local model directory, a hub id, or (kind "verl") the checkpoint's actor folder
    kind: str  # "hf" | "hub" | "verl"
    source: str  # what --model said


def _actor_folder(folder: Path) -> Path | None:
    if (folder / "actor").is_dir():
        return folder / "actor"
    if folder.name == "actor" and ((folder / "fsdp_config.json").exists() or (folder / "huggingface").is_dir()):
        return folder
    return None


def _is_checkpoint_folder(folder: Path) -> bool:
    return bool(_STEP_FOLDER.match(folder.name)) or any(
        (folder / name).exists() for name in ("data.pt", "depo", "critic", "actor")
    )


def check_actor(actor: Path) -> list[Path]:
    """The FSDP shards of a verl actor checkpoint, or an error saying what is missing."""
    shards = sorted(actor.glob("model_world_size_*_rank_*.pt"))
    if not (actor / "fsdp_config.json").exists() or not shards:
        if (actor / "model").is_dir() or (actor / "dist_ckpt").is_dir():
            raise EvalError(
                f"--model: {actor} is a Megatron checkpoint; merge it with "
                f"`python -m verl.model_merger merge --backend megatron --local_dir {actor} --target_dir DIR` "
                "and pass DIR as --model"
            )
        raise EvalError(f"--model: {actor} holds no FSDP actor shards (model_world_size_*_rank_*.pt, fsdp_config.json)")
    if not (actor / "huggingface" / "config.json").exists():
        raise EvalError(f"--model: {actor}/huggingface/config.json is missing; verl saves the model config there")
    return shards


def check_merge_target(target: Path) -> None:
    """A merge replaces ``target`` when the checkpoint changed: only a folder an earlier merge made
    (it holds ``MERGE_MARKER``), an empty folder or nothing may be there. Anything else (a model
    folder, a home directory, ``.``) is refused, so a mistyped ``--merged-dir`` deletes nothing."""
    if not target.exists():
        if target.is_symlink():
            raise EvalError(f"--merged-dir {target}: a broken symbolic link; give a new or empty folder")
        return
    if not target.is_dir():
        raise EvalError(f"--merged-dir {target}: a file, not a folder; give a new or empty folder")
    try:
        marker = json.loads((target / MERGE_MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        marker = None
    if isinstance(marker, dict) and "actor" in marker:
        return
    if next(target.iterdir(), None) is None:
        return
    raise EvalError(
        f"--merged-dir {target}: an existing folder that evaluate's merge did not make (no {MERGE_MARKER} in it); "
        "a merge replaces its folder, so give a new or empty one"
    )


def merge_verl_actor(actor: Path, target: Path) -> Path:
    """Merge an FSDP actor checkpoint with verl's model merger into ``target`` (complete or absent;
    reused when it was merged from the same shards; refused when ``target`` holds anything else)."""
    shards = check_actor(actor)
    check_merge_target(target)
    origin = {"actor": str(actor.resolve()), "shards": {s.name: s.stat().st_mtime_ns for s in shards}}
    marker = target / MERGE_MARKER
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == origin:
                return target
        except json.JSONDecodeError:
            pass

    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        config = ModelMergerConfig(
            operation="merge",
            backend="fsdp",
            local_dir=str(actor),
            target_dir=str(tmp),
            hf_model_config_path=str(actor / "huggingface"),
        )
        merger = FSDPModelMerger(config)
        try:
            merger.merge_and_save()
        except (AttributeError, ModuleNotFoundError, pickle.UnpicklingError) as exc:
            # the shards are pickles of torch objects (DTensor, device mesh) that only the torch
            # version that wrote them reliably reads: the vLLM venv's 2.11 vs the light env's 2.13
            import torch

            raise EvalError(
                f"--model {actor}: its shards do not load with torch {torch.__version__} in this Python "
                f"({type(exc).__name__}: {exc}); evaluate it with the Python that trained it "
                "(for ROLLOUT=vllm runs: .venv-vllm/bin/python -m recipe.depo.evaluate ...)"
            ) from exc
        merger.cleanup()
        (tmp / MERGE_MARKER).write_text(json.dumps(origin))
        check_merge_target(target)  # again: the merge took a while, and something may have appeared there
        publish_dir(str(tmp), str(target))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def locate_model(spec: str) -> ResolvedModel:
    """What ``spec`` names, checked without loading or merging anything (so a bad --model fails
    before any output is written). For a verl checkpoint, ``path`` is its actor folder."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return ResolvedModel(str(path), "hf", spec)
        latest = path / "latest_checkpointed_iteration.txt"
        if latest.exists() and not _actor_folder(path):
            # verl's checkpoint root (trainer.default_local_dir): its latest complete step
            step = latest.read_text().strip()
            if not step.isdigit() or not (path / f"global_step_{step}").is_dir():
                raise EvalError(f"--model {spec}: {latest} names step {step!r}, which has no global_step folder")
            path = path / f"global_step_{step}"
        actor = _actor_folder(path)
        if actor is not None:
            check_actor(actor)
            return ResolvedModel(str(actor), "verl", spec)
        if _is_checkpoint_folder(path):
            raise EvalError(f"--model {spec}: a verl checkpoint folder without an actor/ folder (nothing to evaluate)")
        raise EvalError(
            f"--model {spec}: neither a Hugging Face model directory (config.json) nor a verl checkpoint "
            "step folder (global_step_N with actor/)"
        )
    if path.exists():
        raise EvalError(f"--model {spec}: a file; expected a model directory, a hub id or a verl checkpoint folder")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ResolvedModel(spec, "hub", spec)
    raise EvalError(f"--model {spec}: no such directory (and not a hub id like Qwen/Qwen2.5-7B-Instruct)")


def loadable_path(model: ResolvedModel, merged_dir: str | os.PathLike) -> str:
    """A path transformers / vLLM can load: verl checkpoints are merged into ``merged_dir`` first."""
    if model.kind == "verl":
        return str(merge_verl_actor(Path(model.path), Path(merged_dir)))
    return model.path
