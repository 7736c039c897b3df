"""The private verl internals the CPU backend relies on (recipe/depo/cpu/verl_internals.py). The
three patches are checked by their effect in fresh interpreters in test_cpu_plugin.py; here: the
replica's server fields and the verl version they were written against."""

import pytest


def test_replica_server_is_published_where_verl_reads_it():
    from verl.workers.config import RolloutConfig

    from recipe.depo.cpu import verl_internals
    from recipe.depo.cpu.hf_rollout import HFReplica

    replica = HFReplica(replica_rank=0, config=RolloutConfig(name="hf"), model_config={}, gpus_per_node=1)
    handle = object()
    verl_internals.set_replica_server(replica, handle, "hf-replica-0")
    # LLMServerManager reads the private fields; verl's public properties read the same ones
    assert (replica._server_handle, replica._server_address) == (handle, "hf-replica-0")
    assert (replica.server_handle, replica.server_address) == (handle, "hf-replica-0")

    class Bare:  # what a verl without those fields would hand us
        pass

    with pytest.raises(verl_internals.VerlInternalsChanged, match="RolloutReplica._server_handle"):
        verl_internals.set_replica_server(Bare(), handle, "x")


def test_required_verl_version_is_the_one_installed():
    from pathlib import Path

    import verl
    from packaging.specifiers import SpecifierSet

    import recipe.depo

    pin = (Path(recipe.depo.__file__).parent / "REQUIRED_VERL.txt").read_text().strip()
    assert verl.__version__ in SpecifierSet(pin), (
        f"verl {verl.__version__} is installed but the CPU plugin's internals were checked against {pin}; "
        "re-run tests/cpu after updating recipe/depo/cpu/verl_internals.py"
    )
