"""Resuming DEPO with changed estimator or filter settings: refused by key before any worker
starts when the trained weights cannot take it, otherwise listed for the log."""

import json
import os

import pytest

from recipe.depo.checkpoint import check_settings
from recipe.depo.config_fields import DEPOConfigError
from recipe.depo.estimator import EstimatorConfig, OnlineEstimator, build_tiny_encoder
from recipe.depo.filter import DifficultyFilter, FilterConfig


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    """A DEPO state directory as the trainer writes it: estimator/ plus state.json."""
    root = tmp_path_factory.mktemp("resume")
    encoder = build_tiny_encoder(str(root / "encoder"))
    config = EstimatorConfig.paper(backbone=encoder, hidden_dims=(16,))
    folder = root / "depo"
    OnlineEstimator(config).save(str(folder / "estimator"))
    flt = DifficultyFilter(FilterConfig(window=(0.15, 0.85), warmup_steps=5, explore_rate=0.0, max_scan=64, seed=0))
    with open(folder / "state.json", "w") as f:
        json.dump({"format_version": 1, "global_steps": 3, "filter": flt.state_dict()}, f)
    return str(folder), config


def same_filter(**changes):
    values = dict(window=(0.15, 0.85), warmup_steps=5, explore_rate=0.0, max_scan=64, seed=0)
    values.update(changes)
    return FilterConfig(**values)


def changed(config, **values):
    return EstimatorConfig.from_dict({**config.to_dict(), **values})


def test_unchanged_settings_have_nothing_to_say(state_dir):
    folder, estimator = state_dir
    assert check_settings(folder, estimator, same_filter()) == []


def test_changed_settings_are_listed_by_key(state_dir):
    folder, estimator = state_dir
    changes = check_settings(
        folder, changed(estimator, lr=1e-3, calibration="affine"), same_filter(window=(0.15, 0.9), seed=3)
    )
    assert changes == [
        "depo.estimator.calibration: 'none' in the checkpoint, 'affine' now (applied)",
        "depo.estimator.lr: 0.0002 in the checkpoint, 0.001 now (applied)",
        "depo.filter.window: [0.15, 0.85] in the checkpoint, [0.15, 0.9] now (applied)",
        "depo.filter.seed: 0 in the checkpoint, 3 now (no effect: the exploration RNG resumes from the checkpoint)",
    ]


@pytest.mark.parametrize("key,value", [("pooling", "mean"), ("head", "residual"), ("hidden_dims", [32])])
def test_weight_shaping_change_is_refused_naming_the_yaml_key(state_dir, key, value):
    folder, estimator = state_dir
    with pytest.raises(DEPOConfigError, match=rf"^depo\.estimator\.{key}: .* in the checkpoint"):
        check_settings(folder, changed(estimator, **{key: value}), same_filter())
    assert os.path.isdir(folder)  # nothing touched


def test_every_filter_field_is_compared_and_older_checkpoints_still_read(state_dir, tmp_path):
    folder, estimator = state_dir
    # compared from the config's fields: a field added to FilterConfig is covered without a list to keep
    others = {"enable": False, "warmup_steps": 6, "explore_rate": 0.1, "max_scan": 65, "mode": "shadow"}
    others.update(guard_threshold=0.2, guard_steps=3)
    assert set(others) | {"window", "seed", "selector"} == set(FilterConfig().to_dict())
    for key, value in others.items():
        assert check_settings(folder, estimator, same_filter(**{key: value})) == [
            f"depo.filter.{key}: {getattr(same_filter(), key)!r} in the checkpoint, {value!r} now (applied)"
        ]
    # state.json written before the settings were saved by field name held the window as low/high
    legacy = tmp_path / "depo"
    legacy.mkdir()
    os.symlink(os.path.join(folder, "estimator"), legacy / "estimator")
    old = {"low": 0.15, "high": 0.85, "warmup_steps": 5, "explore_rate": 0.0, "max_scan": 64, "seed": 0}
    with open(legacy / "state.json", "w") as f:
        json.dump({"format_version": 2, "global_steps": 3, "filter": {"config": old}}, f)
    assert check_settings(str(legacy), estimator, same_filter()) == []
    assert check_settings(str(legacy), estimator, same_filter(window=(0.1, 0.85))) == [
        "depo.filter.window: [0.15, 0.85] in the checkpoint, [0.1, 0.85] now (applied)"
    ]


def test_selector_changes_are_listed_by_their_full_key(state_dir):
    folder, estimator = state_dir
    tuned = same_filter(selector={"name": "depo", "greso": {"p_step": 0.02}})
    assert check_settings(folder, estimator, tuned) == []  # another selector's block: not in use
    # another selector: its state cannot carry over, so it starts fresh (and the estimator is not compared)
    assert check_settings(folder, changed(estimator, pooling="mean"), same_filter(selector={"name": "greso"})) == [
        "depo.filter.selector.name: 'depo' in the checkpoint, 'greso' now (its state is not restored: "
        "the new selector starts fresh)"
    ]
