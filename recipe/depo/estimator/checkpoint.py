"""The online estimator's checkpoint: one directory, written atomically, from which training
resumes exactly (weights, optimizer, RNG stream, counters, label history, calibration map).

Layout: ``backbone/`` (save_pretrained model + tokenizer), ``heads.pt`` (trunk and heads),
``optimizer.pt``, ``rng.pt``, ``config.json``, ``state.json`` (counters, calibration map, format
version), ``replay.json`` (the labels kept for replay and calibration).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile

import torch

from ..fsutil import publish_dir, read_json
from .config import EstimatorConfig, resume_changes
from .online import OnlineEstimator, _Labelled

logger = logging.getLogger(__name__)

# 2 adds the label history (replay.json) and the calibration map; 1 still loads (empty, identity).
CHECKPOINT_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)


def save(est: OnlineEstimator, path: str) -> str:
    """Write a complete checkpoint directory at ``path`` atomically (complete or absent)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        backbone_dir = os.path.join(tmp, "backbone")
        est.model.backbone.save_pretrained(backbone_dir)
        est.tokenizer.save_pretrained(backbone_dir)
        torch.save({k: v.detach().cpu() for k, v in est.model.head_state_dict().items()}, os.path.join(tmp, "heads.pt"))
        torch.save(est.optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
        rng = {k: (None if v is None else v.cpu()) for k, v in est._rng_state.items()}
        torch.save(rng, os.path.join(tmp, "rng.pt"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(est.config.to_json())
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(
                {
                    "format_version": CHECKPOINT_FORMAT_VERSION,
                    "num_updates": est.num_updates,
                    "num_optimizer_steps": est.num_optimizer_steps,
                    "num_skipped": est.num_skipped,
                    "calibration": list(est.calibration),
                },
                f,
            )
        with open(os.path.join(tmp, "replay.json"), "w") as f:
            json.dump({"entries": [entry.to_json() for entry in est._history]}, f)
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(
    cls: type[OnlineEstimator],
    path: str,
    *,
    config: EstimatorConfig | dict | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> OnlineEstimator:
    """Rebuild an estimator from ``save``'s directory; training resumes exactly.

    ``config``: the settings to resume with (e.g. the run's current YAML). Every difference
    from the checkpoint's settings is applied and logged (``resumed_changes``), except those
    that cannot apply to trained weights (backbone, pooling, head shape, freezing or
    unfreezing the backbone): those raise a ValueError naming the key. None resumes with the
    saved settings. ``device``/``dtype`` override either (e.g. a bfloat16 GPU checkpoint read
    on CPU needs ``device="cpu", dtype="float32"``); weights are float32 either way.
    """
    saved = EstimatorConfig.from_dict(read_json(os.path.join(path, "config.json"), "estimator config"))
    state = read_json(os.path.join(path, "state.json"), "estimator checkpoint state")
    if state.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{path}: checkpoint format_version {state.get('format_version')!r}, "
            f"expected one of {READABLE_FORMAT_VERSIONS}"
        )
    if config is None:
        new = saved
    else:
        new = config if isinstance(config, EstimatorConfig) else EstimatorConfig.from_dict(config)
    overrides = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if overrides:
        new = EstimatorConfig.from_dict({**new.to_dict(), **overrides})
    applied, refused = resume_changes(saved.to_dict(), new.to_dict())
    if refused:
        raise ValueError(f"{refused[0]} (checkpoint {path})")
    # The trained encoder lives in the checkpoint; the (possibly moved) original is not read.
    est = cls(new, backbone_path=os.path.join(path, "backbone"))
    heads = torch.load(os.path.join(path, "heads.pt"), map_location=est.device, weights_only=True)
    missing, unexpected = est.model.load_state_dict(heads, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise ValueError(f"{path}/heads.pt does not match the model: missing {missing}, unexpected {unexpected}")
    est.optimizer.load_state_dict(
        torch.load(os.path.join(path, "optimizer.pt"), map_location=est.device, weights_only=True)
    )
    # load_state_dict restores the saved lr / weight decay into the param groups: a changed
    # setting must win over it, or a resume would silently keep training at the old values.
    _set_optimizer_hyperparameters(est)
    rng = torch.load(os.path.join(path, "rng.pt"), weights_only=True)
    if est.device.type != "cuda" or rng.get("cuda") is None:
        rng["cuda"] = est._rng_state.get("cuda")
    est._rng_state = rng
    est.num_updates = int(state["num_updates"])
    est.num_optimizer_steps = int(state.get("num_optimizer_steps", state["num_updates"]))
    est.num_skipped = int(state.get("num_skipped", 0))
    if state["format_version"] >= 2:
        replay_file = os.path.join(path, "replay.json")
        replay = read_json(replay_file, "estimator label history")
        try:
            est._history.extend(_Labelled.from_json(entry) for entry in replay["entries"])
            a, b = (float(v) for v in state["calibration"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed label history or calibration ({type(exc).__name__}: {exc})") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"{path}/state.json: calibration {state['calibration']!r} is not finite")
        if new.calibration != "none":
            est.calibration = (a, b)
    # A changed mode or window takes effect now, not one update late.
    if new.calibration != "none" and (new.calibration, new.calibration_steps, new.calibration_prior) != (
        saved.calibration,
        saved.calibration_steps,
        saved.calibration_prior,
    ):
        if est._history:
            est._refit_calibration()
    est.resumed_changes = applied
    for change in applied:
        logger.warning(f"estimator resumed from {path} with a changed setting: {change}")
    return est


def _set_optimizer_hyperparameters(est: OnlineEstimator) -> None:
    cfg = est.config
    groups = est.optimizer.param_groups
    lrs = [cfg.lr * cfg.backbone_lr_scale, cfg.lr] if len(groups) == 2 else [cfg.lr]
    for group, lr in zip(groups, lrs):
        group["lr"] = lr
        group["weight_decay"] = cfg.weight_decay
