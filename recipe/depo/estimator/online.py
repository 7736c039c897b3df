"""OnlineEstimator: predicts mean@k for prompts and learns from each RL step's labels."""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .calibration import IDENTITY, apply_calibration, fit_calibration
from .config import EstimatorConfig
from .losses import distill_loss, objective, ranking_loss, ranking_pair_mask, score_loss
from .model import DifficultyEstimator


@dataclass
class _Labelled:
    """One update call's labels, kept for replay and calibration."""

    prompts: list[str]
    mean_k: np.ndarray
    logprob: np.ndarray | None

    def logprob_or_nan(self) -> np.ndarray:
        if self.logprob is None:
            return np.full(len(self.prompts), np.nan, dtype=np.float32)
        return self.logprob

    def to_json(self) -> dict:
        return {
            "prompts": self.prompts,
            "mean_k": self.mean_k.tolist(),
            # JSON has no NaN: a prompt without a distill target is written as null
            "avg_logprob": None if self.logprob is None else _nan_to_none(self.logprob),
        }

    @classmethod
    def from_json(cls, entry: dict) -> _Labelled:
        prompts = _check_prompts(entry["prompts"])
        logprob = entry.get("avg_logprob")
        return cls(
            prompts=prompts,
            mean_k=_check_mean_k(entry["mean_k"], len(prompts)),
            logprob=None
            if logprob is None
            else _check_avg_logprob([np.nan if x is None else x for x in logprob], len(prompts)),
        )


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(x) else x for x in values.tolist()]


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


def _as_float_array(values: Any, name: str, n: int, allow_nan: bool = False) -> np.ndarray:
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
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        what = "inf" if allow_nan else "NaN or inf"
        raise ValueError(f"{name} contains {what} (first at index {int(np.argmax(bad))})")
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
    """NaN marks a prompt without a distill target (no log-probs for its group); inf is an error."""
    arr = _as_float_array(avg_logprob, "avg_logprob", n, allow_nan=True)
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
        # Update calls that trained (num_optimizer_steps counts their AdamW steps), and calls
        # refused because a loss or gradient was not finite.
        self.num_updates = 0
        self.num_optimizer_steps = 0
        self.num_skipped = 0
        self._history: deque[_Labelled] = deque(maxlen=self._history_length())
        # (a, b) of the calibration map sigmoid(a * logit + b) that predict applies.
        self.calibration: tuple[float, float] = IDENTITY
        # What a resume changed relative to the checkpoint's settings (``load(config=...)``).
        self.resumed_changes: list[str] = []

    def _history_length(self) -> int:
        cfg = self.config
        return max(cfg.replay_steps, cfg.calibration_steps if cfg.calibration != "none" else 1)

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
        """Predicted mean@k in [0, 1] per prompt (float32, input order); eval mode, no grad,
        through the calibration map (the identity unless ``calibration`` is on)."""
        return apply_calibration(self._predict_logits(prompts), *self.calibration)

    @torch.no_grad()
    def _predict_logits(self, prompts: list[str]) -> np.ndarray:
        """Raw (uncalibrated) score logits, eval mode, input order: what ``predict`` maps through
        the calibration, and what the calibration is fitted on."""
        prompts = _check_prompts(prompts)
        was_training = self.model.training
        self.model.eval()
        score = torch.empty(len(prompts), dtype=torch.float32)
        try:
            for idx, ids, mask in self._batches(self._tokenize(prompts), self.config.predict_batch_size):
                score[idx] = self._forward(ids, mask)[0].cpu()
        finally:
            self.model.train(was_training)
        return score.numpy()

    def update(self, prompts: list[str], mean_k: Any, avg_logprob: Any = None) -> dict[str, float]:
        """Learn from one RL step's labels; returns metrics.

        ``mean_k``: per-prompt accuracy over the k rollouts, in [0, 1]. ``avg_logprob``: per-prompt
        mean response-token log-prob (<= 0); None turns the distill term off for these prompts
        (the caller has no rollout log-probs) rather than training it on a constant target, and a
        NaN entry for that prompt alone (a group dropped by dynamic sampling before the actor
        computed its log-probs): it is learnt from its mean@k only.

        Takes ``updates_per_step`` AdamW steps, each over these labels plus those of the previous
        ``replay_steps - 1`` calls (ranking pairs only within one call's prompts), then refits the
        calibration map. The paper's estimator (1 and 1, no calibration) takes one step on this
        call's labels.

        Metrics: ``loss`` and its terms (first step, whole replay batch), ``calib_mae`` = mean
        |p - mean_k| and ``spearman`` of p vs mean_k over this call's prompts, where p are the
        training-mode predictions *before* the first optimizer step, through the calibration the
        filter used (a free by-product of the forward pass; they include dropout noise),
        ``grad_norm`` (before clipping), ``num_pairs`` (valid ranking pairs), ``skipped`` (1.0
        when a non-finite loss/gradient refused a step), ``optimizer_steps``, ``replay_prompts``,
        ``calib_a``/``calib_b`` (after the refit), ``update_time_s``.
        """
        t0 = time.perf_counter()
        prompts = _check_prompts(prompts)
        n = len(prompts)
        labels_np = _check_mean_k(mean_k, n)
        logprob_np = None if avg_logprob is None else _check_avg_logprob(avg_logprob, n)
        cfg = self.config
        self._history.append(_Labelled(prompts, labels_np, logprob_np))

        # This call's labels first: the metrics are taken over rows [0, n).
        replay = list(self._history)[-cfg.replay_steps :][::-1]
        batch_prompts = [p for entry in replay for p in entry.prompts]
        labels = torch.from_numpy(np.concatenate([entry.mean_k for entry in replay]))
        logprob = torch.from_numpy(np.concatenate([entry.logprob_or_nan() for entry in replay]))
        groups = torch.cat([torch.full((len(e.prompts),), g, dtype=torch.long) for g, e in enumerate(replay)])
        token_ids = self._tokenize(batch_prompts)

        calib_before = self.calibration
        metrics: dict[str, float] | None = None
        steps_taken = 0
        skipped = False
        for _ in range(cfg.updates_per_step):
            step_metrics, pre_logits = self._optimizer_step(token_ids, labels, logprob, groups)
            if metrics is None:
                metrics = step_metrics
                first_pre_logits = pre_logits
            if step_metrics["skipped"]:
                skipped = True
                break
            steps_taken += 1
        assert metrics is not None
        if steps_taken:
            self.num_updates += 1
            self.num_optimizer_steps += steps_taken
        if skipped:
            self.num_skipped += 1
        if steps_taken and cfg.calibration != "none":
            self._refit_calibration()

        metrics["skipped"] = float(skipped)
        metrics["num_updates"] = float(self.num_updates)
        metrics["optimizer_steps"] = float(steps_taken)
        metrics["replay_prompts"] = float(len(batch_prompts))
        if not metrics["skipped_first"]:
            preds = apply_calibration(first_pre_logits[:n].numpy(), *calib_before)
            metrics["calib_mae"] = float(np.abs(preds - labels_np).mean())
            metrics["spearman"] = spearman(preds, labels_np)
        else:
            metrics["calib_mae"] = float("nan")
            metrics["spearman"] = float("nan")
        del metrics["skipped_first"]
        metrics["calib_a"], metrics["calib_b"] = self.calibration
        metrics["update_time_s"] = time.perf_counter() - t0
        return metrics

    def _optimizer_step(
        self, token_ids: list[list[int]], labels: torch.Tensor, logprob: torch.Tensor, groups: torch.Tensor
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One AdamW step on the whole batch (exact micro-batching); (metrics, pre-step logits).

        ``logprob`` holds NaN for prompts without a distill target; ``groups`` restricts ranking
        pairs to prompts labelled in the same call.
        """
        cfg = self.config
        n = len(token_ids)
        has_lp = ~torch.isnan(logprob)
        num_lp = int(has_lp.sum())
        use_distill = num_lp > 0 and cfg.w_distill != 0
        num_pairs = int(ranking_pair_mask(labels, cfg.ranking_threshold, groups).sum())
        use_ranking = cfg.w_ranking != 0 and num_pairs > 0

        batches = list(self._batches(token_ids, cfg.micro_batch_size))
        # The authors' code scales the ranking gradient by 1 / (number of micro-batches).
        w_ranking = cfg.w_ranking / len(batches) if cfg.ranking_divide_by_micro_batches else cfg.w_ranking
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
            # (|mb|/B) * score + (|mb with target|/B_target) * w_distill * distill
            # + <d ranking/d logits, logits>. The sum over micro-batches is the gradient of the
            # full-batch `objective`, with the ranking weight undivided (unless the authors'
            # division is asked for). Pass 1 is skipped when there is no ranking term, and when
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
                rank = ranking_loss(leaf, labels, cfg.ranking_threshold, cfg.ranking_margin, groups)
                ranking_value = float(rank.detach())
                if math.isfinite(ranking_value):
                    (w_ranking * rank).backward()
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
                    mb_has = has_lp[idx]
                    if num_lp and bool(mb_has.any()):
                        rows = mb_has.to(self.device)
                        d_loss = distill_loss(d[rows], logprob[idx][mb_has].to(self.device))
                        d_weight = int(mb_has.sum()) / num_lp
                        distill_value += d_weight * float(d_loss.detach())
                        if use_distill:
                            mb_loss = mb_loss + (d_weight * cfg.w_distill) * d_loss
                    if rank_grad is not None:
                        # Its value is not a loss, but its gradient is exactly the ranking
                        # term's gradient through this micro-batch's logits.
                        mb_loss = mb_loss + (rank_grad[idx] * s).sum()
                    elif fused_ranking:
                        rank = ranking_loss(s, mb_labels, cfg.ranking_threshold, cfg.ranking_margin, groups[idx])
                        ranking_value = float(rank.detach())
                        mb_loss = mb_loss + w_ranking * rank
                    score_value += weight * float(s_loss.detach())
                    if not torch.isfinite(mb_loss).item():
                        finite = False
                        break
                    mb_loss.backward()
                    pre_logits[idx] = s.detach().cpu()

        if finite and not use_ranking and num_pairs > 0:
            # Ranking is off (w_ranking = 0) but still reported, from the logits we already have.
            ranking_value = float(ranking_loss(pre_logits, labels, cfg.ranking_threshold, cfg.ranking_margin, groups))
        loss_value = objective(
            score_value,
            distill_value if use_distill else None,
            ranking_value if use_ranking else 0.0,
            w_distill=cfg.w_distill,
            w_ranking=w_ranking,
        )

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float("nan")
        if finite and math.isfinite(loss_value):
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        skipped = not (finite and math.isfinite(loss_value) and math.isfinite(grad_norm))
        if skipped:
            # Gradients may hold NaN/inf: drop them so nothing reaches the weights or AdamW's moments.
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        metrics = {
            "loss": loss_value,
            "score_loss": score_value,
            "distill_loss": distill_value,
            "ranking_loss": ranking_value,
            "grad_norm": grad_norm,
            "num_pairs": float(num_pairs),
            "skipped": float(skipped),
            "skipped_first": skipped,
        }
        return metrics, pre_logits

    # ------------------------------------------------------------------ calibration
    def _refit_calibration(self) -> None:
        """Refit (a, b) on the latest ``calibration_steps`` calls' labels, against the logits of
        the model as it is *now* (after this call's steps), so the map never double-counts what
        the encoder itself has just learned."""
        cfg = self.config
        entries = list(self._history)[-cfg.calibration_steps :]
        prompts = [p for e in entries for p in e.prompts]
        labels = np.concatenate([e.mean_k for e in entries])
        logits = self._predict_logits(prompts)
        self.calibration = fit_calibration(logits, labels, cfg.calibration, cfg.calibration_prior)

    # ------------------------------------------------------------------ checkpointing
    def save(self, path: str) -> str:
        """Write a complete checkpoint directory at ``path`` atomically (``estimator.checkpoint``)."""
        from .checkpoint import save

        return save(self, path)

    @classmethod
    def load(
        cls,
        path: str,
        *,
        config: EstimatorConfig | dict | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> OnlineEstimator:
        """Rebuild an estimator from ``save``'s directory; training resumes exactly
        (``estimator.checkpoint.load`` says how changed settings apply)."""
        from .checkpoint import load

        return load(cls, path, config=config, device=device, dtype=dtype)
