"""DEPOTrainer: verl 0.9.1's V1 sync trainer with DEPO's estimator in front of the rollout.

The DEPO logic lives in pure modules (``filter``, ``labels``, ``advantage``); this class only binds
them to verl. It keeps verl's sync semantics (``trainer.v1.trainer_mode`` stays ``sync``, so every
``trainer_mode != "sync"`` branch in verl behaves as for plain GRPO) and overrides these hooks:

=========================  =====================================================================
``_next_train_batch``      batch intake: draw, score, select exactly the requested prompts,
                           carry surplus over (used by ``prepare_step`` and the replay buffer's
                           refills alike)
``_compute_advantage``     after verl's: flag zero-advantage groups, log their share, optionally
                           zero their response/loss masks for the actor update
``step``                   after verl's step (actor updated): restore masks, build labels by uid
                           from TransferQueue, update the estimator, log ``depo/*``
``_save_checkpoint``       estimator + filter state into ``global_step_N/depo/`` *before* verl
                           writes ``latest_checkpointed_iteration.txt``
``_load_checkpoint``       find that state for the step verl resumes from
``on_init_end``            start the estimator worker group (and load its state), then verl's
=========================  =====================================================================

verl internals used beyond those hooks (checked by tests/trainer/test_depo_verl_contract.py):
``_fetch_one_gen_batch`` (one dataloader fetch with uids), ``resource_pool_manager`` /
``role_worker_mapping`` (the actor pool, for colocated placement), ``global_steps``, and the
TransferQueue fields ``uid``, ``extra_fields``, ``rm_scores``, ``response_mask``, ``loss_mask``,
``old_log_probs`` / ``rollout_log_probs`` and the ``is_padding`` tag.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import DictConfig
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu
from verl.utils.debug import marked_timer

from recipe.depo import advantage as depo_advantage  # noqa: F401  (registers grpo_depo)
from recipe.depo.advantage import group_fraction, zero_adv_group_flags
from recipe.depo.filter import REASONS, Admitted, Candidate, DifficultyFilter
from recipe.depo.fsutil import publish_dir, read_json
from recipe.depo.labels import LabelError, build_labels, correctness, prompt_text, response_mean_logprob
from recipe.depo.validation import validate

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

STATE_DIR = "depo"
STATE_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- row helpers
def records_from_batch(batch: TensorDict) -> list[dict]:
    """Split a dataloader batch (TensorDict with tensors and NonTensorStacks) into per-row dicts,
    so rows from different fetches can be kept, carried over, pickled and regrouped."""
    n = batch.batch_size[0]
    columns = {}
    for key in batch.keys():
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            if value.is_nested:
                columns[key] = list(value.unbind())
            else:
                columns[key] = [value[i] for i in range(n)]
        elif getattr(value, "shape", None):  # NonTensorStack: one python object per row
            columns[key] = value.tolist()
        # NonTensorData without a batch dim is per-fetch metadata (e.g. global_steps): re-set later.
    return [{key: col[i] for key, col in columns.items()} for i in range(n)]


def batch_from_records(records: list[dict]) -> TensorDict:
    if not records:
        raise ValueError("cannot build a batch from zero rows")
    columns = {}
    for key in records[0]:
        values = [r[key] for r in records]
        if isinstance(values[0], torch.Tensor):
            columns[key] = (
                torch.nested.as_nested_tensor(values, layout=torch.jagged)
                if any(v.shape != values[0].shape for v in values)
                else torch.stack(values)
            )
        else:
            columns[key] = values
    return tu.get_tensordict(columns)


def _as_list(values) -> list:
    if hasattr(values, "tolist"):
        return values.tolist()
    return list(values)


def _padded(values: torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor) and values.is_nested:
        return torch.nested.to_padded_tensor(values, 0.0)
    return values


def _zeros_like(values: torch.Tensor) -> torch.Tensor:
    if values.is_nested:
        return torch.nested.nested_tensor_from_jagged(torch.zeros_like(values.values()), offsets=values.offsets())
    return torch.zeros_like(values)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from recipe.depo.estimator import spearman

    return float(spearman(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


@dataclass
class _StepIntake:
    """What the intake did during one training step (over all its calls)."""

    scanned: int = 0
    scanned_in_window: int = 0
    kept: list[Admitted] = field(default_factory=list)
    carried_in: int = 0
    cap_hit: bool = False
    predict_time_s: float = 0.0


class DEPOTrainer(PPOTrainerSync):
    def __init__(self, config: DictConfig):
        # Fail before any worker starts; the entry point validated too, tests may come here directly.
        self.depo = validate(config)
        self.estimator_wg = None
        self.depo_filter = DifficultyFilter(self.depo.filter) if self.depo.uses_estimator else None
        # uid -> (dataset row, problem text) of prompts kept but not yet rolled out.
        self._carry_rows: dict[str, tuple[dict, str]] = {}
        # uid -> (problem text, admission) for every prompt submitted to rollout in this step.
        self._step_prompts: dict[str, tuple[str, Admitted]] = {}
        self._intake = _StepIntake()
        # (keys, partition, original masks) zeroed for this step's actor update only.
        self._masked: list[tuple[list[str], str, TensorDict]] = []
        self._depo_resume_dir: str | None = None
        super().__init__(config)

    # ------------------------------------------------------------------ estimator worker
    def _estimator_pool(self):
        from verl.single_controller.ray import RayResourcePool
        from verl.single_controller.ray.base import split_resource_pool

        placement = self.depo.placement
        # Placement-group names are cluster-global: a fixed one would collide with a second trainer.
        name = f"depo_estimator_{uuid.uuid4().hex[:6]}_"
        if placement in ("cpu", "separate"):
            return RayResourcePool(
                process_on_nodes=[1], use_gpu=placement == "separate", max_colocate_count=1, name_prefix=name
            )
        # colocated: one process in the first bundle of the actor pool, like verl's rollout replicas.
        actor_role = next(
            role for role in (Role.Actor, Role.ActorRolloutRef, Role.ActorRollout) if role in self.role_worker_mapping
        )
        actor_pool = self.resource_pool_manager.get_resource_pool(actor_role)
        return split_resource_pool(actor_pool, split_size=1)[0]

    def _init_estimator_worker(self, checkpoint: str | None = None) -> None:
        import ray
        from verl.single_controller.ray import RayClassWithInitArgs, RayWorkerGroup

        from recipe.depo.workers.estimator_worker import DifficultyEstimatorWorker

        pool = self._estimator_pool()
        cls = RayClassWithInitArgs(
            cls=ray.remote(DifficultyEstimatorWorker), config=dict(self.depo.estimator), checkpoint=checkpoint
        )
        self.estimator_wg = RayWorkerGroup(
            resource_pool=pool,
            ray_cls_with_init=cls,
            name_prefix=f"depo_estimator_{uuid.uuid4().hex[:6]}_",
            device_name=self.config.trainer.device if pool.use_gpu else "cpu",
        )
        info = self._estimator_call("init_model")
        logger.info(f"DEPO estimator worker ready ({self.depo.placement}): {info}")

    def _estimator_call(self, method: str, *args):
        from recipe.depo.workers.estimator_worker import single_result

        return single_result(getattr(self.estimator_wg, method)(*args))

    def on_init_end(self):
        if self.depo.uses_estimator:
            checkpoint = os.path.join(self._depo_resume_dir, "estimator") if self._depo_resume_dir else None
            self._init_estimator_worker(checkpoint=checkpoint)
            if self._depo_resume_dir:
                self._load_filter_state(self._depo_resume_dir)
        super().on_init_end()

    # ------------------------------------------------------------------ intake
    def _score(self, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        preds = np.asarray(self._estimator_call("predict", texts), dtype=np.float64)
        self._intake.predict_time_s += time.perf_counter() - t0
        if preds.shape != (len(texts),):
            raise RuntimeError(f"estimator returned {preds.shape} predictions for {len(texts)} prompts")
        return preds

    def _next_train_batch(self, num_prompts: int | None = None) -> TensorDict:
        if not self.depo.uses_estimator:
            return super()._next_train_batch(num_prompts)
        needed = self.config.data.train_batch_size if num_prompts is None else int(num_prompts)
        fresh: dict[str, tuple[dict, str]] = {}
        source = self.depo.text_source

        def draw(at_least: int) -> list[Candidate]:
            records: list[dict] = []
            while len(records) < at_least:
                records.extend(records_from_batch(self._fetch_one_gen_batch()))
            texts = [prompt_text(r["raw_prompt"], r.get("extra_info"), source) for r in records]
            preds = self._score(texts)
            for record, text in zip(records, texts):
                fresh[str(record["uid"])] = (record, text)
            return [Candidate(str(r["uid"]), float(p)) for r, p in zip(records, preds)]

        selection = self.depo_filter.select(needed, self.global_steps, draw)

        rows = []
        for admitted in selection.kept:
            record, text = self._carry_rows.pop(admitted.key, None) or fresh.pop(admitted.key)
            rows.append(record)
            self._step_prompts[admitted.key] = (text, admitted)
        for admitted in self.depo_filter.carry:
            if admitted.key in fresh:
                self._carry_rows[admitted.key] = fresh.pop(admitted.key)
        for key in selection.rejected:
            self._carry_rows.pop(key, None)
        assert set(self._carry_rows) == {a.key for a in self.depo_filter.carry}, "carry-over rows out of sync"

        if self.depo.admissions_log:
            self._log_admissions(selection)

        intake = self._intake
        intake.scanned += len(selection.scanned)
        intake.scanned_in_window += sum(self.depo_filter.in_window(c.prediction) for c in selection.scanned)
        intake.kept.extend(selection.kept)
        intake.carried_in += selection.carried_in
        intake.cap_hit |= selection.scan_cap_hit

        batch = batch_from_records(rows)
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        return batch

    def _log_admissions(self, selection) -> None:
        """One JSON line per decided prompt: what was predicted and why it was (not) rolled out."""
        scanned = {c.key: c.prediction for c in selection.scanned}
        cfg = self.depo_filter.config
        base = {"step": self.global_steps, "window": [cfg.low, cfg.high]}
        lines = [dict(base, uid=a.key, prediction=a.prediction, decision=a.reason) for a in selection.kept]
        lines += [
            dict(base, uid=a.key, prediction=a.prediction, decision="carried")
            for a in self.depo_filter.carry
            if a.key in scanned
        ]
        lines += [dict(base, uid=k, prediction=scanned.get(k), decision="rejected") for k in selection.rejected]
        os.makedirs(os.path.dirname(os.path.abspath(self.depo.admissions_log)), exist_ok=True)
        with open(self.depo.admissions_log, "a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)

    # ------------------------------------------------------------------ advantage hook
    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        batch = super()._compute_advantage(batch, metrics)
        keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
        if not keys:
            return batch
        score_field = "token_level_rewards" if self.config.algorithm.use_kl_in_reward else "rm_scores"
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["uid", score_field])
        scores = _padded(data[score_field]).float().sum(dim=-1)
        uids = [str(u) for u in _as_list(data["uid"])]
        flags = zero_adv_group_flags(scores, uids)
        flagged, groups = group_fraction(flags, uids)
        metrics["depo/zero_adv_group_frac"] = flagged / groups
        if self.depo.enable and self.depo.mask_zero_adv_groups:
            masked = 0
            # With every group flagged there is no gradient either way; masking all tokens would
            # only turn the token-mean into 0/0.
            if 0 < flagged < groups:
                masked_keys = [k for k, f in zip(keys, flags) if f]
                self._mask_rows(masked_keys, batch.partition_id)
                masked = flagged
            metrics["depo/masked_groups"] = masked
        return batch

    def _mask_rows(self, keys: list[str], partition_id: str) -> None:
        fields = ["response_mask", "loss_mask"]
        original = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=fields)
        zeros = TensorDict({name: _zeros_like(original[name]) for name in fields}, batch_size=len(keys))
        tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=zeros)
        self._masked.append((keys, partition_id, original))

    def _restore_masks(self) -> None:
        while self._masked:
            keys, partition_id, original = self._masked.pop()
            tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=original)

    # ------------------------------------------------------------------ step end
    def step(self, metrics: dict, timing_raw: dict) -> KVBatchMeta:
        self._step_prompts = {}
        self._intake = _StepIntake()
        batch = super().step(metrics, timing_raw)
        # The masks were for the actor's loss only; metrics and labels read the real ones.
        self._restore_masks()
        if self.depo.uses_estimator:
            with marked_timer("depo_estimator_update", timing_raw, color="purple"):
                metrics.update(self._update_estimator(batch))
            metrics.update(self._intake_metrics())
        return batch

    def _update_estimator(self, batch: KVBatchMeta) -> dict:
        keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
        lp_field = self.depo.logprob_source
        data = tq.kv_batch_get(
            keys=keys, partition_id=batch.partition_id, select_fields=["uid", "extra_fields", "response_mask", lp_field]
        )
        # TransferQueue silently omits fields no row has; name the setting that would provide it.
        missing = [name for name in ("uid", "extra_fields", "response_mask", lp_field) if name not in data.keys()]
        if missing:
            hint = {
                "extra_fields": f"the reward extras holding {self.depo.acc_key!r} (depo.labels.acc_key)",
                lp_field: f"the log-probs named by depo.labels.logprob_source={lp_field!r}",
            }
            raise LabelError(
                "the trained batch lacks " + ", ".join(hint.get(m, m) for m in missing) + " in TransferQueue"
            )
        uids = [str(u) for u in _as_list(data["uid"])]
        correct = [correctness(extra, self.depo.acc_key) for extra in _as_list(data["extra_fields"])]
        mask = _padded(data["response_mask"]).float().numpy()
        log_probs = _padded(data[lp_field]).float().numpy()
        if log_probs.shape != mask.shape:
            raise LabelError(f"{lp_field} {log_probs.shape} and response_mask {mask.shape} do not line up")
        if mask.sum() > 0 and not np.any(log_probs[mask > 0]):
            raise LabelError(
                f"every response token has {lp_field} == 0: the rollout did not return log-probs; set "
                "depo.labels.logprob_source=old_log_probs or actor_rollout_ref.rollout.calculate_log_probs=true"
            )
        labels = build_labels(uids, correct, response_mean_logprob(log_probs, mask))
        unknown = [u for u in labels.uids if u not in self._step_prompts]
        if unknown:
            raise RuntimeError(f"{len(unknown)} trained prompt(s) were not submitted by this step's intake")
        usable = ~np.isnan(labels.avg_logprob)
        texts = [self._step_prompts[u][0] for u, ok in zip(labels.uids, usable) if ok]
        out = {"depo/labels_dropped": float((~usable).sum())}
        if texts:
            est = self._estimator_call("update", texts, labels.mean_k[usable], labels.avg_logprob[usable])
            out.update({f"depo/estimator/{k}": float(v) for k, v in est.items()})
        preds = np.array([self._step_prompts[u][1].prediction for u in labels.uids])
        out["depo/target_mean"] = float(labels.mean_k.mean())
        # Calibration of the predictions the filter acted on (eval mode, before this update).
        out["depo/calib_mae"] = float(np.abs(preds - labels.mean_k).mean())
        out["depo/spearman"] = _spearman(preds, labels.mean_k) if len(preds) > 1 else float("nan")
        return out

    def _intake_metrics(self) -> dict:
        intake = self._intake
        warm = self.depo_filter.warming_up(self.global_steps)
        kept_preds = np.array([a.prediction for a in intake.kept]) if intake.kept else np.zeros(0)
        n = self.config.actor_rollout_ref.rollout.n
        out = {
            "depo/prompts_scanned": intake.scanned,
            # NaN when the batch came entirely from carry-over: nothing was scored this step.
            "depo/survival_rate": (
                1.0 if warm else intake.scanned_in_window / intake.scanned if intake.scanned else float("nan")
            ),
            "depo/rollouts_saved": n * self.depo_filter.counters["rejected"],
            "depo/pred_mean": float(kept_preds.mean()) if kept_preds.size else float("nan"),
            "depo/pred_std": float(kept_preds.std()) if kept_preds.size else float("nan"),
            "depo/warmup_active": float(warm),
            "depo/scan_cap_hit": float(intake.cap_hit),
            "depo/prompts_kept": len(intake.kept),
            "depo/prompts_carried_in": intake.carried_in,
            "depo/carry_over": len(self.depo_filter.carry),
            "depo/estimator/predict_time_s": intake.predict_time_s,
        }
        for reason in REASONS:
            out[f"depo/kept_{reason}"] = sum(1 for a in intake.kept if a.reason == reason)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _step_folder(self) -> str:
        return os.path.abspath(os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}"))

    def _save_checkpoint(self):
        # DEPO state first: verl writes latest_checkpointed_iteration.txt last, so a resume never
        # points at a step folder whose DEPO state is missing or half written.
        if self.depo.uses_estimator:
            self._save_depo_state(self._step_folder())
        super()._save_checkpoint()

    def _save_depo_state(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        final = os.path.join(folder, STATE_DIR)
        tmp = os.path.join(folder, f".{STATE_DIR}.tmp-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
        try:
            self._estimator_call("save_checkpoint", os.path.join(tmp, "estimator"))
            carry_rows = [self._carry_rows[a.key] for a in self.depo_filter.carry]
            torch.save(carry_rows, os.path.join(tmp, "carry_rows.pt"))
            state = {
                "format_version": STATE_FORMAT_VERSION,
                "global_steps": self.global_steps,
                "filter": self.depo_filter.state_dict(),
            }
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump(state, f)
            publish_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _resume_folder(self) -> str:
        """The global_step_N folder verl's ``_load_checkpoint`` just resumed from."""
        trainer_cfg = self.config.trainer
        if trainer_cfg.resume_mode == "resume_path":
            folder = trainer_cfg.resume_from_path
        else:
            folder = os.path.join(trainer_cfg.default_local_dir, f"global_step_{self.global_steps}")
        return os.path.abspath(folder)

    def _load_checkpoint(self):
        super()._load_checkpoint()
        self._depo_resume_dir = None
        if not self.depo.uses_estimator or self.global_steps == 0:
            return
        folder = self._resume_folder()
        state_dir = os.path.join(folder, STATE_DIR)
        if os.path.isfile(os.path.join(state_dir, "state.json")):
            self._depo_resume_dir = state_dir
        elif self.depo.require_state:
            raise RuntimeError(
                f"resuming from {folder}, which holds no DEPO state ({STATE_DIR}/): the estimator and the "
                "filter would silently restart from scratch. Set depo.checkpoint.require_state=false to "
                "accept that (e.g. to start DEPO from a plain GRPO checkpoint)."
            )
        else:
            logger.warning(f"{folder} has no DEPO state; estimator and filter start fresh")

    def _load_filter_state(self, state_dir: str) -> None:
        state = read_json(os.path.join(state_dir, "state.json"), "DEPO filter state")
        if state.get("format_version") != STATE_FORMAT_VERSION:
            raise RuntimeError(f"{state_dir}: DEPO state format {state.get('format_version')!r} is not supported")
        self.depo_filter.load_state_dict(state["filter"])
        rows = torch.load(os.path.join(state_dir, "carry_rows.pt"), weights_only=False)
        if len(rows) != len(self.depo_filter.carry):
            raise RuntimeError(
                f"{state_dir}: {len(rows)} carried rows for {len(self.depo_filter.carry)} carried prompts"
            )
        self._carry_rows = {a.key: row for a, row in zip(self.depo_filter.carry, rows)}
