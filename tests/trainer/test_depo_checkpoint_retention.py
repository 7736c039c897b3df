"""DEPO's checkpoint state follows verl's retention, and a save whose estimator state landed on
another node's disk fails loudly instead of publishing ``depo/`` without it (issue 21)."""

import os

import pytest
from omegaconf import OmegaConf

from recipe.depo import checkpoint


class _Intake:
    def carried_rows(self):
        return []

    def state_dict(self):
        return {"filter": {}}


class _Estimator:
    """The worker's save: writes the folder (same node) or, on another node, writes nothing here."""

    def __init__(self, same_node: bool):
        self.same_node = same_node

    def save(self, path):
        if self.same_node:
            os.makedirs(path)
            open(os.path.join(path, "model.pt"), "w").close()
        return path


def _config(root, keep=2):
    return OmegaConf.create({"trainer": {"default_local_dir": str(root), "max_actor_ckpt_to_keep": keep}})


def test_depo_state_goes_with_the_actor_verl_removed(tmp_path):
    config = _config(tmp_path)
    for step in (50, 100, 150):
        checkpoint.save(config, step, _Intake(), _Estimator(same_node=True))
        os.makedirs(tmp_path / f"global_step_{step}" / "actor")
    # verl with max_actor_ckpt_to_keep=2 deleted the oldest actor/ (and only that)
    os.rmdir(tmp_path / "global_step_50" / "actor")
    (tmp_path / "not_a_step" / "depo").mkdir(parents=True)

    assert checkpoint.prune(config, saved_step=150) == [str(tmp_path / "global_step_50" / "depo")]
    assert not (tmp_path / "global_step_50" / "depo").exists()
    for step in (100, 150):
        assert (tmp_path / f"global_step_{step}" / "depo" / "estimator" / "model.pt").is_file()
    assert (tmp_path / "not_a_step" / "depo").is_dir()
    assert checkpoint.prune(config, saved_step=150) == []
    assert checkpoint.prune(_config(tmp_path / "absent"), saved_step=150) == []


def test_nothing_is_pruned_without_retention_nor_from_the_step_just_saved(tmp_path):
    # an actor that saved nothing (or elsewhere) must not cost the resume its DEPO state
    for keep in (None, 0):
        checkpoint.save(_config(tmp_path, keep), 7, _Intake(), _Estimator(same_node=True))
        assert checkpoint.prune(_config(tmp_path, keep), saved_step=7) == []
    assert checkpoint.prune(_config(tmp_path), saved_step=7) == []
    assert (tmp_path / "global_step_7" / "depo" / "state.json").is_file()
    checkpoint.save(_config(tmp_path), 8, _Intake(), _Estimator(same_node=True))
    assert checkpoint.prune(_config(tmp_path), saved_step=8) == [str(tmp_path / "global_step_7" / "depo")]


def test_estimator_state_written_on_another_node_is_refused(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(RuntimeError, match="shared by all nodes"):
        checkpoint.save(config, 50, _Intake(), _Estimator(same_node=False))
    # nothing half-written is left where a resume would look
    assert os.listdir(tmp_path / "global_step_50") == []
