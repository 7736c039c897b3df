"""OnlineEstimator: predicts mean@k for prompts and learns from each RL step's labels."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..fsutil import publish_dir, read_json
from .config import EstimatorConfig
from .losses import distill_loss, objective, ranking_loss, ranking_pair_mask, score_loss
from .model import DifficultyEstimator

CHECKPOINT_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- validation
def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, np.ndarray)):
        raise ValueError(f"prompts must be a list of str, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must not be empty")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompts[{i}] must be a str, got {type(p).__name__}")
    return prompts


def _as_float_array(values: Any, name: str, n: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of numbers") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but prompts has {n}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains NaN or inf (first at index {int(np.argmax(bad))})")
    return arr


def _check_mean_k(mean_k: Any, n: int) -> np.ndarray:
    arr = _as_float_array(mean_k, "mean_k", n)
    bad = (arr < 0.0) | (arr > 1.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"mean_k must lie in [0, 1]; mean_k[{i}] = {arr[i]}")
    return arr.astype(np.float32)


# log_softmax in bf16/fp32 can round a near-certain token's log-prob to a hair above 0; that is
# not a caller bug, so values up to this tolerance are clamped to 0 instead of failing a run.
LOGPROB_POSITIVE_TOLERANCE = 1e-3


def _check_avg_logprob(avg_logprob: Any, n: int) -> np.ndarray:
    arr = _as_float_array(avg_logprob, "avg_logprob", n)
    bad = arr > LOGPROB_POSITIVE_TOLERANCE
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"avg_logprob is a log-probability and must be <= 0; avg_logprob[{i}] = {arr[i]}")
    return np.minimum(arr, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- metrics
def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start : end + 1]] = 0.5 * (start + end)
        start = end + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with tie-averaged ranks.

    Returns 0.0 (not NaN) when either side is constant: a constant predictor carries no ranking
    information, and a NaN would poison running averages in the trainer's metric logger.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return 0.0
    ra = _average_ranks(a) - (len(a) - 1) / 2.0
    rb = _average_ranks(b) - (len(b) - 1) / 2.0
    denom = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    if denom == 0.0:
        return 0.0
    return float((ra * rb).sum() / denom)


# ----------------------------------------------------------------------------- estimator
class OnlineEstimator:
    """Hosts a DifficultyEstimator with its tokenizer and AdamW; one ``update`` = one step.

    The estimator owns its RNG stream (CPU and, on GPU, CUDA): every call that draws random
    numbers swaps it in and out, so the host process's RNG is untouched and a checkpoint
    (which stores the stream) resumes training bit for bit.
    """

    def __init__(self, config: EstimatorConfig | dict | None = None, *, backbone_path: str | None = None) -> None:
        if not isinstance(config, EstimatorConfig):
            config = EstimatorConfig.from_dict(config)
        self.config = config
        self.device = self._resolve_device(config.device)
        if config.dtype == "bfloat16" and self.device.type != "cuda":
            raise ValueError(
                f"dtype='bfloat16' needs a CUDA device but the estimator runs on {self.device.type}; "
                "use dtype='float32'"
            )
        self._autocast = config.dtype == "bfloat16"

        from transformers import AutoTokenizer

        source = backbone_path or config.backbone
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        with self._fork_rng():
            torch.manual_seed(config.seed)
            self.model = DifficultyEstimator.from_config(config, backbone_path=source)
            self._rng_state = self._capture_rng()
        self.model.to(self.device)
        self.max_length = self._effective_max_length()
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        backbone_params = [p for p in self.model.backbone.parameters() if p.requires_grad]
        head_params = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
        groups = [{"params": head_params, "lr": config.lr}]
        if config.backbone_lr_scale > 0:
            groups.insert(0, {"params": backbone_params, "lr": config.lr * config.backbone_lr_scale})
        else:  # a scale of 0 freezes the backbone: no grads, no optimizer state, less memory
            for p in backbone_params:
                p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        self.num_updates = 0
        # Steps refused because the loss or the gradient was not finite (num_updates excludes them).
        self.num_skipped = 0

    # ------------------------------------------------------------------ device / RNG helpers
    @staticmethod
    def _resolve_device(name: str) -> torch.device:
        if name == "auto":
            return (
                torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
            )
        if name == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device='cuda' but torch sees no CUDA device; use device='auto' or 'cpu'")
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _fork_rng(self):
        devices = [self.device.index] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def _capture_rng(self) -> dict[str, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def _restore_rng(self, state: dict[str, torch.Tensor | None]) -> None:
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda" and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        with self._fork_rng():
            self._restore_rng(self._rng_state)
            try:
                yield
            finally:
                self._rng_state = self._capture_rng()

    # ------------------------------------------------------------------ tokenisation / batching
    def _effective_max_length(self) -> int:
        limit = self.config.max_length
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limit = min(limit, tok_max)
        pos_max = getattr(self.model.backbone.config, "max_position_embeddings", None)
        if isinstance(pos_max, int) and pos_max > 0:
            limit = min(limit, pos_max)
        return limit

    def _tokenize(self, prompts: list[str]) -> list[list[int]]:
        enc = self.tokenizer(prompts, truncation=True, max_length=self.max_length, padding=False)
        return enc["input_ids"]

    def _batches(self, token_ids: list[list[int]], batch_size: int):
        """Yield (indices, input_ids, attention_mask), longest prompts first.

        Grouping prompts of similar length cuts padding; callers scatter results back by
        ``indices`` so the output order is the input order.
        """
        lengths = np.array([len(t) for t in token_ids])
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx].max())
            ids = torch.full((len(idx), width), self._pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = token_ids[i]
                ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
            yield torch.as_tensor(idx, dtype=torch.long), ids.to(self.device), mask.to(self.device)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            score, distill = self.model(input_ids, attention_mask)
        return score.float(), distill.float()

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def predict(self, prompts: list[str]) -> np.ndarray:
        """Predicted mean@k in [0, 1] per prompt (float32, input order); eval mode, no grad."""
        return self._predict_logits(prompts)[0]

    @torch.no_grad()
    def predict_with_confidence(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(predicted mean@k, predicted actor confidence), both float32 probabilities."""
        return self._predict_logits(prompts)

    def _predict_logits(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        prompts = _check_prompts(prompts)
        was_training = self.model.training
        self.model.eval()
        score = torch.empty(len(prompts), dtype=torch.float32)
        distill = torch.empty(len(prompts), dtype=torch.float32)
        try:
            for idx, ids, mask in self._batches(self._tokenize(prompts), self.config.predict_batch_size):
                s, d = self._forward(ids, mask)
                score[idx] = s.cpu()
                distill[idx] = d.cpu()
        finally:
            self.model.train(was_training)
        return torch.sigmoid(score).numpy(), torch.sigmoid(distill).numpy()

    def update(self, prompts: list[str], mean_k: Any, avg_logprob: Any = None) -> dict[str, float]:
        """One AdamW step on the whole batch; returns metrics.

        ``mean_k``: per-prompt accuracy over the k rollouts, in [0, 1]. ``avg_logprob``: per-prompt
        mean response-token log-prob (<= 0); None turns the distill term off for this call (the
        caller has no rollout log-probs) rather than training it on a constant target.

        Metrics: ``loss`` and its terms (full-batch values), ``calib_mae`` = mean |p - mean_k| and
        ``spearman`` of p vs mean_k, where p are this step's training-mode predictions *before*
        the optimizer step (a free by-product of the forward pass; they include dropout noise),
        ``grad_norm`` (before clipping), ``num_pairs`` (valid ranking pairs), ``skipped`` (1.0
        when a non-finite loss/gradient refused the step), ``update_time_s``.
        """
        t0 = time.perf_counter()
        prompts = _check_prompts(prompts)
        n = len(prompts)
        labels_np = _check_mean_k(mean_k, n)
        logprob_np = None if avg_logprob is None else _check_avg_logprob(avg_logprob, n)
        cfg = self.config
        labels = torch.from_numpy(labels_np)
        logprob = None if logprob_np is None else torch.from_numpy(logprob_np)
        use_distill = logprob is not None and cfg.w_distill != 0
        num_pairs = int(ranking_pair_mask(labels, cfg.ranking_threshold).sum())
        use_ranking = cfg.w_ranking != 0 and num_pairs > 0

        batches = list(self._batches(self._tokenize(prompts), cfg.micro_batch_size))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        pre_logits = torch.empty(n, dtype=torch.float32)
        score_value = distill_value = 0.0
        ranking_value = 0.0
        finite = True

        with self._own_rng():
            # Why two passes: the ranking loss couples every pair in the batch, so it cannot be
            # split over micro-batches, and keeping one graph for the whole batch would defeat
            # micro-batching's memory bound. Pass 1 computes every score logit (no graph) under a
            # recorded RNG state per micro-batch and takes the exact gradient of
            # w_ranking * ranking(full batch) w.r.t. the logits. Pass 2 replays each micro-batch
            # with the *same* RNG state — so dropout draws the same masks and the logits are the
            # ones the ranking gradient was taken at — and backpropagates
            # (|mb|/B) * (score + w_distill * distill) + <d ranking/d logits, logits>.
            # The sum over micro-batches is the gradient of the full-batch `objective`, with the
            # ranking weight undivided. Pass 1 is skipped when there is no ranking term, and when
            # the batch fits in one micro-batch (then the ranking loss joins the single graph).
            fused_ranking = use_ranking and len(batches) == 1
            rank_grad = None
            rng_states: list[dict] = []
            if use_ranking and not fused_ranking:
                with torch.no_grad():
                    for idx, ids, mask in batches:
                        rng_states.append(self._capture_rng())
                        s, _ = self._forward(ids, mask)
                        pre_logits[idx] = s.cpu()
                leaf = pre_logits.clone().requires_grad_(True)
                rank = ranking_loss(leaf, labels, cfg.ranking_threshold, cfg.ranking_margin)
                ranking_value = float(rank.detach())
                if math.isfinite(ranking_value):
                    (cfg.w_ranking * rank).backward()
                    rank_grad = leaf.grad.to(self.device)
                else:
                    finite = False

            if finite:
                for b, (idx, ids, mask) in enumerate(batches):
                    if rng_states:
                        self._restore_rng(rng_states[b])
                    s, d = self._forward(ids, mask)
                    weight = len(idx) / n
                    mb_labels = labels[idx].to(self.device)
                    s_loss = score_loss(s, mb_labels)
                    mb_loss = weight * s_loss
                    if logprob is not None:
                        d_loss = distill_loss(d, logprob[idx].to(self.device))
                        distill_value += weight * float(d_loss.detach())
                        if use_distill:
                            mb_loss = mb_loss + (weight * cfg.w_distill) * d_loss
                    if rank_grad is not None:
                        # Its value is not a loss, but its gradient is exactly the ranking
                        # term's gradient through this micro-batch's logits.
                        mb_loss = mb_loss + (rank_grad[idx] * s).sum()
                    elif fused_ranking:
                        rank = ranking_loss(s, mb_labels, cfg.ranking_threshold, cfg.ranking_margin)
                        ranking_value = float(rank.detach())
                        mb_loss = mb_loss + cfg.w_ranking * rank
                    score_value += weight * float(s_loss.detach())
                    if not torch.isfinite(mb_loss).item():
                        finite = False
                        break
                    mb_loss.backward()
                    pre_logits[idx] = s.detach().cpu()

        if finite and not use_ranking and num_pairs > 0:
            # Ranking is off (w_ranking = 0) but still reported, from the logits we already have.
            ranking_value = float(ranking_loss(pre_logits, labels, cfg.ranking_threshold, cfg.ranking_margin))
        loss_value = objective(
            score_value,
            distill_value if logprob is not None else None,
            ranking_value if use_ranking else 0.0,
            w_distill=cfg.w_distill,
            w_ranking=cfg.w_ranking,
        )

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float("nan")
        if finite and math.isfinite(loss_value):
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        skipped = not (finite and math.isfinite(loss_value) and math.isfinite(grad_norm))
        if skipped:
            # Gradients may hold NaN/inf: drop them so nothing reaches the weights or AdamW's moments.
            self.optimizer.zero_grad(set_to_none=True)
            self.num_skipped += 1
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.num_updates += 1

        metrics = {
            "loss": loss_value,
            "score_loss": score_value,
            "distill_loss": distill_value,
            "ranking_loss": ranking_value,
            "grad_norm": grad_norm,
            "num_pairs": float(num_pairs),
            "skipped": float(skipped),
            "num_updates": float(self.num_updates),
        }
        if not skipped:
            preds = torch.sigmoid(pre_logits).numpy()
            metrics["calib_mae"] = float(np.abs(preds - labels_np).mean())
            metrics["spearman"] = spearman(preds, labels_np)
        else:
            metrics["calib_mae"] = float("nan")
            metrics["spearman"] = float("nan")
        metrics["update_time_s"] = time.perf_counter() - t0
        return metrics

    # ------------------------------------------------------------------ checkpointing
    def save(self, path: str) -> str:
        """Write a complete checkpoint directory at ``path`` atomically (complete or absent).

        Layout: ``backbone/`` (save_pretrained model + tokenizer), ``heads.pt`` (trunk and heads),
        ``optimizer.pt``, ``rng.pt``, ``config.json``, ``state.json`` (counters, format version).
        """
        path = os.path.abspath(path)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
        try:
            backbone_dir = os.path.join(tmp, "backbone")
            self.model.backbone.save_pretrained(backbone_dir)
            self.tokenizer.save_pretrained(backbone_dir)
            torch.save(
                {k: v.detach().cpu() for k, v in self.model.head_state_dict().items()}, os.path.join(tmp, "heads.pt")
            )
            torch.save(self.optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
            rng = {k: (None if v is None else v.cpu()) for k, v in self._rng_state.items()}
            torch.save(rng, os.path.join(tmp, "rng.pt"))
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write(self.config.to_json())
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump(
                    {
                        "format_version": CHECKPOINT_FORMAT_VERSION,
                        "num_updates": self.num_updates,
                        "num_skipped": self.num_skipped,
                    },
                    f,
                )
            publish_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str, *, device: str | None = None, dtype: str | None = None) -> OnlineEstimator:
        """Rebuild an estimator from ``save``'s directory; training resumes exactly.

        ``device``/``dtype`` override the saved config (e.g. a bfloat16 GPU checkpoint read on CPU
        needs ``device="cpu", dtype="float32"``); weights are float32 either way.
        """
        values = read_json(os.path.join(path, "config.json"), "estimator config")
        if device is not None:
            values["device"] = device
        if dtype is not None:
            values["dtype"] = dtype
        state = read_json(os.path.join(path, "state.json"), "estimator checkpoint state")
        if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise ValueError(
                f"{path}: checkpoint format_version {state.get('format_version')!r}, "
                f"expected {CHECKPOINT_FORMAT_VERSION}"
            )
        est = cls(EstimatorConfig.from_dict(values), backbone_path=os.path.join(path, "backbone"))
        heads = torch.load(os.path.join(path, "heads.pt"), map_location=est.device, weights_only=True)
        missing, unexpected = est.model.load_state_dict(heads, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise ValueError(f"{path}/heads.pt does not match the model: missing {missing}, unexpected {unexpected}")
        est.optimizer.load_state_dict(
            torch.load(os.path.join(path, "optimizer.pt"), map_location=est.device, weights_only=True)
        )
        rng = torch.load(os.path.join(path, "rng.pt"), weights_only=True)
        if est.device.type != "cuda" or rng.get("cuda") is None:
            rng["cuda"] = est._rng_state.get("cuda")
        est._rng_state = rng
        est.num_updates = int(state["num_updates"])
        est.num_skipped = int(state.get("num_skipped", 0))
        return est
