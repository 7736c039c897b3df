"""``DEPOConfig``: the ``depo:`` block of depo_trainer.yaml as verl ``BaseConfig`` dataclasses.

As with verl's own ``algorithm:`` block, every section carries ``_target_``, so
``verl.utils.config.omega_conf_to_dataclass(config.depo)`` builds the same object. Each dataclass
checks its own fields (``config_fields.FieldChecks``); what needs another part of the run's
config (batch size, rollout, reward) is checked in ``validation.py``. The sections live beside
the code that reads them:

================================  ==============================================
``depo.estimator``                ``recipe.depo.estimator.EstimatorConfig``
``depo.filter``                   ``recipe.depo.filter.FilterConfig``
``depo.labels``                   ``recipe.depo.labels.LabelsConfig``
``depo.advantage_filter``         ``recipe.depo.advantage.AdvantageFilterConfig``
``depo.checkpoint``               :class:`CheckpointConfig`
================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from verl.base_config import BaseConfig

from recipe.depo.advantage import AdvantageFilterConfig
from recipe.depo.config_fields import FieldChecks, build, to_plain
from recipe.depo.estimator.config import EstimatorConfig
from recipe.depo.filter import FilterConfig
from recipe.depo.labels import LabelsConfig


@dataclass
class CheckpointConfig(BaseConfig):
    """``depo.checkpoint``."""

    config_key: ClassVar[str] = "depo.checkpoint"

    # Resuming from a step folder without DEPO state is refused unless this is false.
    require_state: bool = True

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.boolean("require_state")
        check.done()


SECTIONS: dict[str, type] = {
    "estimator": EstimatorConfig,
    "filter": FilterConfig,
    "labels": LabelsConfig,
    "advantage_filter": AdvantageFilterConfig,
    "checkpoint": CheckpointConfig,
}


@dataclass
class DEPOConfig(BaseConfig):
    """The whole ``depo:`` block. ``enable=false`` is plain verl (no estimator, no masking)."""

    config_key: ClassVar[str] = "depo"

    enable: bool = True
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    advantage_filter: AdvantageFilterConfig = field(default_factory=AdvantageFilterConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # JSONL file with one line per decided prompt (auditing the filter); None: off.
    admissions_log: str | None = None

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.boolean("enable")
        check.text("admissions_log", optional=True, what="a file path")
        for name, section_cls in SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, section_cls):  # a plain mapping, e.g. DEPOConfig(filter={...})
                object.__setattr__(self, name, build(section_cls, value, check.problems))
        check.done()

    @property
    def uses_filter(self) -> bool:
        """The pre-rollout filter runs (``depo.enable`` and ``depo.filter.enable``); it learns from
        per-prompt labels whichever selector decides."""
        return self.enable and self.filter.enable

    @property
    def uses_estimator(self) -> bool:
        """The estimator worker runs: the filter is on and its selector reads predictions
        (``depo``, ``hybrid``; ``greso`` and ``posterior`` need none)."""
        return self.uses_filter and self.filter.needs_estimator


def parse(block: Any) -> tuple[DEPOConfig, list[tuple[str, str]]]:
    """The ``depo:`` block as a ``DEPOConfig`` plus every field problem found in it. Where a field
    is bad its default stands in, so checks of the rest of the config can still run. A config
    without a ``depo:`` block is plain verl (``enable=false``)."""
    problems: list[tuple[str, str]] = []
    if block is None:
        return DEPOConfig(enable=False), problems
    values = to_plain(block)
    if not isinstance(values, Mapping):
        problems.append(("depo", f"must be a mapping, got {values!r}"))
        return DEPOConfig(enable=False), problems
    sections = {name: build(section_cls, values.get(name), problems) for name, section_cls in SECTIONS.items()}
    top = {k: v for k, v in values.items() if k not in SECTIONS}
    return build(DEPOConfig, {**top, **sections}, problems), problems
