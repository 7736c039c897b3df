"""What makes verl's own trainer run on a machine without an accelerator: a verl plugin (active
only with ``VERL_PLATFORM=cpu``), its platform, the ``hf`` rollout and the patches of verl
internals it needs. The CPU demo's own tools (tiny policy, summary) are in ``recipe.depo.demo``."""

import os

PLATFORM_ENV = "VERL_PLATFORM"
CPU_PLATFORM = "cpu"
# The rollout name the plugin registers (actor_rollout_ref.rollout.name=hf in config/cpu.yaml).
ROLLOUT_NAME = "hf"


def cpu_requested() -> bool:
    """Whether this process was asked to run verl on CPU (``VERL_PLATFORM=cpu``)."""
    return os.environ.get(PLATFORM_ENV, "").strip().lower() == CPU_PLATFORM
