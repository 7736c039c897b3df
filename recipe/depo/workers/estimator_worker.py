"""The Ray worker that hosts DEPO's difficulty estimator next to verl's actor/rollout workers.

Used through a ``RayWorkerGroup`` of world size 1 (the estimator is small; one process is the
normal case), which ``estimator_client.EstimatorClient`` starts and calls. Every method is
dispatched ONE_TO_ALL, so verl returns a list with one result per worker. Resuming is done by
starting a worker with ``checkpoint=``.

Transfer is kept cheap: prompts go as a plain list of str, labels and predictions as float32
numpy arrays (Ray ships numpy buffers without pickling element by element).
"""

from __future__ import annotations

import numpy as np
import torch
from verl.single_controller.base import Worker
from verl.single_controller.base.decorator import Dispatch, register

from recipe.depo.estimator import EstimatorConfig, OnlineEstimator


class DifficultyEstimatorWorker(Worker):
    """Hosts one OnlineEstimator; GPU when the Ray pool gave this process one, else CPU."""

    def __init__(self, config: dict | None = None, checkpoint: str | None = None) -> None:
        super().__init__()
        # Validate on construction so a bad key fails at worker start, naming the key.
        self.config = EstimatorConfig.from_dict(config)
        self._checkpoint = checkpoint
        self.estimator: OnlineEstimator | None = None

    def _require(self) -> OnlineEstimator:
        if self.estimator is None:
            raise RuntimeError("DifficultyEstimatorWorker.init_model() must be called first")
        return self.estimator

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> dict:
        """Load the backbone (or the checkpoint given at construction) on this worker's device."""
        if self._checkpoint:
            # The run's settings, not the checkpoint's: changes are applied and reported in
            # describe()["resumed_changes"], or refused naming the key.
            self.estimator = OnlineEstimator.load(self._checkpoint, config=self.config)
        else:
            self.estimator = OnlineEstimator(self.config)
        return self.describe()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def describe(self) -> dict:
        est = self._require()
        return {
            "device": str(est.device),
            "num_updates": est.num_updates,
            "num_optimizer_steps": est.num_optimizer_steps,
            "num_skipped": est.num_skipped,
            "calibration": list(est.calibration),
            "resumed_changes": list(est.resumed_changes),
            "backbone": est.config.backbone,
            "num_parameters": sum(p.numel() for p in est.model.parameters()),
        }

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def predict(self, prompts: list[str]) -> np.ndarray:
        return self._require().predict(prompts)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def update(self, prompts: list[str], mean_k: np.ndarray, avg_logprob: np.ndarray | None = None) -> dict:
        est = self._require()
        try:
            return est.update(prompts, mean_k, avg_logprob)
        finally:
            release_cached_memory(est.device)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str) -> str:
        return self._require().save(path)


def release_cached_memory(device: torch.device) -> None:
    """Hand the update's activation and gradient blocks back to the GPU.

    Colocated, the estimator shares GPU 0 with an actor and a vLLM server; PyTorch's caching
    allocator would otherwise keep the update's peak (~1-2 GB for DistilBERT at micro-batch 8 x 512
    tokens) reserved while vLLM wakes up and claims its gpu_memory_utilization share. The weights
    and Adam's state stay allocated: they are needed at the next step.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
