"""Reading the estimator checkpoint the router scores with, with one-line errors naming the file.

``OnlineEstimator.load`` is written for the trainer's own resumes; handed a copied, truncated or
hand-assembled folder it fails deep inside torch or transformers (a truncated ``heads.pt`` gives
"PytorchStreamReader failed reading zip archive", a missing ``backbone/`` an error about hub repo
ids). Everything the load needs is checked here first, so the router (offline or serving) says
which file is wrong in one line.
"""

from __future__ import annotations

import os
import zipfile

_FILES = ("config.json", "state.json", "heads.pt", "optimizer.pt", "rng.pt")
_TORCH_FILES = ("heads.pt", "optimizer.pt", "rng.pt")
_HINT = "expected a directory written by OnlineEstimator.save (e.g. CKPT/global_step_N/depo/estimator)"


class CheckpointError(ValueError):
    """The estimator checkpoint cannot be used; the message names the file."""


def check_checkpoint(path: str) -> None:
    """Raise CheckpointError unless ``path`` holds every file a load reads, each complete as far as
    can be told without loading it (torch files are zip archives: a truncated one has no central
    directory)."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such directory; {_HINT}")
    for name in _FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(f"{path}: no {name}; {_HINT}")
    backbone = os.path.join(path, "backbone")
    if not os.path.isfile(os.path.join(backbone, "config.json")):
        raise CheckpointError(f"{path}: no backbone/ with a config.json (the trained encoder); {_HINT}")
    for name in _TORCH_FILES:
        if not zipfile.is_zipfile(os.path.join(path, name)):
            raise CheckpointError(
                f"{os.path.join(path, name)}: not a complete torch file (truncated or not a checkpoint)"
            )


def load_estimator(path: str, device: str = "auto"):
    """An ``OnlineEstimator.save`` directory, ready to score on ``device`` (auto: CUDA if any)."""
    check_checkpoint(path)
    import torch

    from recipe.depo.estimator import OnlineEstimator

    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        # bfloat16 autocast needs CUDA; on CPU the float32 weights are read as they are.
        return OnlineEstimator.load(path, device=resolved, dtype="float32" if resolved == "cpu" else None)
    except Exception as exc:  # whatever is left (a damaged backbone, weights of another shape)
        reason = (str(exc).strip().splitlines() or [""])[0]
        if isinstance(exc, ValueError) and path in reason:  # the load's own checks name the file
            raise CheckpointError(reason) from None
        raise CheckpointError(f"{path}: cannot load the estimator ({type(exc).__name__}: {reason})") from None
