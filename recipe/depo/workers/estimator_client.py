"""The trainer's side of the estimator worker: where it runs, the calls, and its checkpoint.

``depo.estimator.placement``:

* ``colocated`` -- one process in the first bundle of the actor's resource pool, sharing that
  GPU, as verl's own rollout replicas share the actor pool;
* ``separate`` -- its own one-GPU pool (the cluster needs a GPU beyond the trainer's);
* ``cpu`` -- a CPU-only process (small encoders, tests).

Every call goes through a verl ``RayWorkerGroup`` of one worker; ``single_result`` unwraps the
per-worker list verl returns for ONE_TO_ALL methods.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from recipe.depo.estimator import EstimatorConfig, spearman
from recipe.depo.estimator.losses import distill_target
from recipe.depo.labels import PromptLabels, canonical_order

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


def single_result(outputs: Any) -> Any:
    """Unwrap the per-worker list that a ONE_TO_ALL call through a worker group returns."""
    if isinstance(outputs, list):
        if not outputs:
            raise ValueError("the worker group returned no result (no workers?)")
        return outputs[0]
    return outputs


def estimator_pool(placement: str, actor_pool: Any = None):
    """The Ray resource pool the estimator worker is placed in (see the module docstring)."""
    from verl.single_controller.ray import RayResourcePool
    from verl.single_controller.ray.base import split_resource_pool

    if placement in ("cpu", "separate"):
        # Placement-group names are cluster-global: a fixed one would collide with a second trainer.
        return RayResourcePool(
            process_on_nodes=[1],
            use_gpu=placement == "separate",
            max_colocate_count=1,
            name_prefix=f"depo_estimator_{uuid.uuid4().hex[:6]}_",
        )
    if actor_pool is None:
        raise ValueError("placement 'colocated' needs the actor's resource pool")
    return split_resource_pool(actor_pool, split_size=1)[0]


class EstimatorClient:
    """Handle on one running ``DifficultyEstimatorWorker``."""

    def __init__(self, worker_group: Any) -> None:
        self.worker_group = worker_group

    @classmethod
    def start(
        cls,
        config: EstimatorConfig,
        *,
        actor_pool: Any = None,
        device_name: str = "cuda",
        checkpoint: str | None = None,
    ) -> EstimatorClient:
        """Start the worker in its pool and load the backbone (or ``checkpoint``, to resume)."""
        import ray
        from verl.single_controller.ray import RayClassWithInitArgs, RayWorkerGroup

        from recipe.depo.workers.estimator_worker import DifficultyEstimatorWorker

        pool = estimator_pool(config.placement, actor_pool)
        worker_group = RayWorkerGroup(
            resource_pool=pool,
            ray_cls_with_init=RayClassWithInitArgs(
                cls=ray.remote(DifficultyEstimatorWorker), config=config.to_dict(), checkpoint=checkpoint
            ),
            name_prefix=f"depo_estimator_{uuid.uuid4().hex[:6]}_",
            device_name=device_name if pool.use_gpu else "cpu",
        )
        client = cls(worker_group)
        logger.info(f"DEPO estimator worker ready ({config.placement}): {client.call('init_model')}")
        return client

    def call(self, method: str, *args: Any) -> Any:
        return single_result(getattr(self.worker_group, method)(*args))

    def predict(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.call("predict", texts), dtype=np.float64)

    def update(self, texts: list[str], mean_k: np.ndarray, avg_logprob: np.ndarray) -> dict[str, float]:
        return self.call("update", texts, mean_k, avg_logprob)

    def update_async(self, texts: list[str], mean_k: np.ndarray, avg_logprob: np.ndarray) -> Any:
        """``update`` sent and not waited for: a Ray object ref of its metrics."""
        # one worker: rank zero, with the arguments as they are (execute_all would split lists
        # whose length happens to equal the number of workers)
        return self.worker_group.execute_rank_zero_async("update", texts, mean_k, avg_logprob)

    def save(self, path: str) -> str:
        return self.call("save_checkpoint", path)

    def num_updates(self) -> int:
        return int(self.call("describe")["num_updates"])

    def learn(self, labels: PromptLabels, submitted: Mapping[str, Any]) -> dict[str, float]:
        """One update on this step's labels; returns ``depo/*`` metrics (see :meth:`start_learning`)."""
        return self.start_learning(labels, submitted).result()

    def start_learning(self, labels: PromptLabels, submitted: Mapping[str, Any]) -> PendingLearning:
        """Send one update on this step's labels to the worker and return at once; the returned
        record's ``result()`` waits for it and gives the ``depo/*`` metrics, including how well
        the predictions the filter acted on (made before this update) match the labels. The
        worker runs its calls in order, so a ``predict`` sent after this sees the updated weights.

        ``submitted`` maps each uid the intake sent to rollout to its ``Submitted`` record. A prompt
        without ``avg_logprob`` (NaN: a group dynamic sampling dropped before the actor computed its
        log-probs, or no response token) is learnt from its mean@k alone (no distill target).
        """
        unknown = [uid for uid in labels.uids if uid not in submitted]
        if unknown:
            raise RuntimeError(f"{len(unknown)} labelled prompt(s) were not submitted by DEPO's intake")
        out: dict[str, float] = {}
        if not len(labels):
            return PendingLearning(None, out)
        has_lp = ~np.isnan(labels.avg_logprob)
        texts = [submitted[uid].text for uid in labels.uids]
        # the same update whatever order verl's batch arrived in (the metrics below do not depend on it)
        order = canonical_order(texts, labels)
        ref = self.update_async([texts[i] for i in order], labels.mean_k[order], labels.avg_logprob[order])
        out["depo/labels_without_logprob"] = float((~has_lp).sum())
        predictions = np.array([submitted[uid].prediction for uid in labels.uids], dtype=np.float64)
        targets = labels.mean_k.astype(np.float64)
        out["depo/target_mean"] = float(targets.mean())
        if has_lp.any():
            # The distill head's target (the actor's confidence), as the estimator sees it.
            confidence = distill_target(torch.from_numpy(labels.avg_logprob[has_lp]))
            out["depo/distill_target_mean"] = float(confidence.mean())
        out["depo/calib_mae"] = float(np.abs(predictions - targets).mean())
        out["depo/spearman"] = spearman(predictions, targets) if len(predictions) > 1 else float("nan")
        return PendingLearning(ref, out)


class PendingLearning:
    """An estimator update sent to the worker: ``result()`` waits for it (once) and returns the
    step's ``depo/*`` metrics, the worker's ``depo/estimator/*`` among them."""

    def __init__(self, ref: Any, metrics: dict[str, float]) -> None:
        self._ref = ref
        self._metrics = metrics

    def result(self) -> dict[str, float]:
        if self._ref is not None:
            import ray

            update = ray.get(self._ref)
            self._ref = None
            self._metrics = {**{f"depo/estimator/{k}": float(v) for k, v in update.items()}, **self._metrics}
        return self._metrics
