"""depo_trainer.yaml composes from the installed package into DEPOConfig; its defaults pass the
start-up checks; bad settings fail naming their key, all of them at once."""

import copy
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

import recipe.depo
from recipe.depo.validation import DEPOConfigError, validate

CONFIG_DIR = os.path.join(os.path.dirname(recipe.depo.__file__), "config")
VALID = [
    "actor_rollout_ref.rollout.n=4",
    "data.train_batch_size=8",
    "reward.custom_reward_function.path=pkg://recipe.depo.reward",
]


def compose_depo(*overrides):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose("depo_trainer", overrides=[*VALID, *overrides])


_BASE = None


def with_values(**values):
    """The valid base config (composed once: hydra takes ~2 s a compose) with keys set;
    keys use __ for dots."""
    from omegaconf import OmegaConf

    global _BASE
    if _BASE is None:
        _BASE = compose_depo()
    cfg = copy.deepcopy(_BASE)
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def test_composes_from_the_installed_package_with_paper_and_measured_defaults():
    cfg = compose_depo()
    assert cfg.trainer.use_v1 is True and cfg.trainer.v1.trainer_mode == "sync"
    assert cfg.algorithm.adv_estimator == "grpo_depo"
    d = cfg.depo
    assert d.enable is True
    assert d.filter.warmup_steps == 100 and list(d.filter.window) == [0.15, 0.85]
    assert d.filter.explore_rate == 0.0 and d.labels.acc_key == "acc"
    assert d.estimator.backbone == "distilbert-base-uncased"
    assert (d.estimator.w_distill, d.estimator.w_ranking) == (0.5, 3.0)
    assert (d.estimator.ranking_threshold, d.estimator.ranking_margin) == (0.05, 0.5)
    assert (d.estimator.backbone_lr_scale, d.estimator.micro_batch_size) == (0.2, 8)
    # Measured defaults where they differ from the paper (docs/estimator.md, selection benchmark).
    assert (d.estimator.lr, d.estimator.updates_per_step, d.estimator.replay_steps) == (1e-3, 2, 1)
    assert (d.estimator.calibration, d.estimator.calibration_steps) == ("affine", 4)
    assert d.estimator.head == "mlp" and d.estimator.ranking_divide_by_micro_batches is False
    settings = validate(cfg)
    assert settings.filter.max_scan == 8 * 8  # null -> 8 x train_batch_size
    assert settings.estimator.placement == "colocated" and settings.uses_estimator


def test_defaults_pass_depo_and_verl_checks():
    """A bare `python -m recipe.depo.main_depo` gets past DEPO's checks and verl's own."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("depo_trainer")
    assert cfg.actor_rollout_ref.rollout.n == 8
    assert validate(cfg).uses_estimator
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def test_yaml_sections_instantiate_through_their_target_and_match_the_dataclass_defaults():
    import dataclasses

    from verl.utils.config import omega_conf_to_dataclass

    from recipe.depo.config import DEPOConfig

    cfg = compose_depo()
    through_hydra = omega_conf_to_dataclass(cfg.depo)  # verl's own path: _target_ + hydra.instantiate
    assert isinstance(through_hydra, DEPOConfig)
    checked = validate(cfg)
    assert through_hydra == dataclasses.replace(checked, filter=dataclasses.replace(checked.filter, max_scan=None))
    # the yaml holds the dataclasses' defaults: one source of each default value
    assert through_hydra == DEPOConfig()


def test_every_estimator_config_field_is_in_the_yaml():
    import dataclasses

    from recipe.depo.estimator import EstimatorConfig

    fields = {f.name for f in dataclasses.fields(EstimatorConfig)}
    assert fields <= set(compose_depo().depo.estimator.keys())


def test_cfg_job_prints_the_config_without_ray(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "recipe.depo.main_depo", "--cfg", "job", "depo.filter.warmup_steps=7"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "warmup_steps: 7" in out.stdout and "acc_key: acc" in out.stdout
    assert "ray init" not in out.stdout.lower()


def test_bare_enable_gets_past_config_checks_and_names_the_missing_data_in_one_line(tmp_path):
    """`python -m recipe.depo.main_depo depo.enable=true` with nothing else set: the config's defaults
    pass every check, and the first thing missing (the training data) is refused in one line before
    Ray starts. The data path is pinned to tmp_path so a machine that has ~/data/rlhf/gsm8k still
    stops here instead of starting a 7B run."""
    missing = tmp_path / "train.parquet"
    out = subprocess.run(
        [sys.executable, "-m", "recipe.depo.main_depo", "depo.enable=true", f"data.train_files={missing}"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "invalid config" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("depo: cannot train on this data: data.train_files:") and str(missing) in last, last
    assert "ray init" not in (out.stdout + out.stderr).lower()


@pytest.mark.parametrize(
    "values, key",
    [
        ({"depo.filter.window": [0.6, 0.4]}, "depo.filter.window"),
        ({"depo.filter.window": [0.5, 0.5]}, "depo.filter.window"),
        ({"depo.filter.window": [-0.1, 0.5]}, "depo.filter.window"),
        ({"depo.filter.window": [0.1, 1.5]}, "depo.filter.window"),
        ({"depo.filter.window": [0.1]}, "depo.filter.window"),
        ({"trainer.use_v1": False}, "trainer.use_v1"),
        ({"trainer.v1.trainer_mode": "fully_async"}, "trainer.v1.trainer_mode"),
        ({"trainer.v1.trainer_mode": "colocate_async", "skip.rollout_tq.enable": True}, "skip.rollout_tq.enable"),
        ({"trainer.v1.trainer_mode": "colocate_async", "depo.filter.mode": "shadow"}, "depo.filter.mode"),
        (
            {
                "trainer.v1.trainer_mode": "separate_async",
                "actor_rollout_ref.rollout.checkpoint_engine.backend": "naive",
            },
            "actor_rollout_ref.rollout.checkpoint_engine.backend",
        ),
        (
            {
                "trainer.v1.trainer_mode": "separate_async",
                "actor_rollout_ref.rollout.checkpoint_engine.backend": "nccl",
                "trainer.v1.separate_async.parameter_sync_step": 3,
            },
            "trainer.v1.separate_async.parameter_sync_step",
        ),
        ({"depo.estimator.backbone": "/no/such/encoder"}, "depo.estimator.backbone"),
        ({"depo.estimator.backbone": "./missing_dir"}, "depo.estimator.backbone"),
        ({"depo.estimator.pooling": "max"}, "depo.estimator.pooling"),
        ({"depo.estimator.lr": -1.0}, "depo.estimator.lr"),
        ({"depo.estimator.placement": "gpu9"}, "depo.estimator.placement"),
        ({"depo.estimator.no_such_knob": 1}, "depo.estimator.no_such_knob"),
        ({"depo.labels.acc_key": ""}, "depo.labels.acc_key"),
        ({"depo.checkpoint.require_state": "no"}, "depo.checkpoint.require_state"),
        ({"depo.admissions_log": 3}, "depo.admissions_log"),
        ({"depo.filter.explore_rate": 2.0}, "depo.filter.explore_rate"),
        ({"depo.filter.warmup_steps": -1}, "depo.filter.warmup_steps"),
        ({"depo.filter.max_scan": 4}, "depo.filter.max_scan"),
        ({"data.gen_batch_size": 128, "depo.filter.max_scan": 64}, "data.gen_batch_size"),
        ({"data.train_batch_size": 0}, "data.train_batch_size"),
        ({"actor_rollout_ref.rollout.n": 1}, "actor_rollout_ref.rollout.n"),
        ({"reward.reward_model.enable": True}, "reward.reward_model.enable"),
        ({"reward.custom_reward_function.path": "/no/such/reward.py"}, "reward.custom_reward_function.path"),
        ({"reward.custom_reward_function.path": "pkg://no_such_module_xyz"}, "reward.custom_reward_function.path"),
        (
            {"reward.custom_reward_function.path": None, "depo.labels.acc_key": "correct"},
            "reward.custom_reward_function.path",
        ),
        (
            {"depo.labels.logprob_source": "rollout_log_probs", "actor_rollout_ref.rollout.calculate_log_probs": False},
            "depo.labels.logprob_source",
        ),
        ({"depo.labels.logprob_source": "zeros"}, "depo.labels.logprob_source"),
        ({"depo.labels.text_source": "chat"}, "depo.labels.text_source"),
        (
            {"depo.advantage_filter.mask_zero_adv_groups": True, "algorithm.adv_estimator": "gae"},
            "algorithm.adv_estimator",
        ),
        ({"depo.enable": "yes"}, "depo.enable"),
        ({"depo.filter.selector.name": "mopps"}, "depo.filter.selector.name"),
        ({"depo.filter.selector.hybrid.prior_weight": -1}, "depo.filter.selector.hybrid.prior_weight"),
        ({"depo.filter.selector.posterior.decay": 0.0}, "depo.filter.selector.posterior.decay"),
        ({"depo.filter.selector.greso.p_step": 0}, "depo.filter.selector.greso.p_step"),
        ({"depo.filter.mode": "dry_run"}, "depo.filter.mode"),
        ({"depo.filter.guard_threshold": 1.5}, "depo.filter.guard_threshold"),
        ({"depo.filter.guard_steps": -1}, "depo.filter.guard_steps"),
    ],
)
def test_invalid_settings_fail_naming_the_key(values, key):
    cfg = with_values(**{k.replace(".", "__"): v for k, v in values.items()})
    with pytest.raises(DEPOConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(f"{key}:"), str(err.value)


@pytest.mark.parametrize("mode", ["sync", "colocate_async", "separate_async"])
def test_each_verl_trainer_mode_is_accepted(mode):
    values = {"trainer__v1__trainer_mode": mode}
    if mode == "separate_async":  # verl's own requirements of that mode
        values["actor_rollout_ref__rollout__checkpoint_engine__backend"] = "nccl"
        values["trainer__v1__separate_async__parameter_sync_step"] = 2
        values["actor_rollout_ref__actor__ppo_mini_batch_size"] = 4
    cfg = with_values(**values)
    validate(cfg)


def test_every_problem_is_reported_at_once():
    cfg = with_values(
        depo__filter__window=[0.9, 0.1],
        depo__estimator__pooling="max",
        depo__estimator__no_such_knob=1,
        depo__labels__text_source="chat",
        actor_rollout_ref__rollout__n=1,
        trainer__use_v1=False,
        depo__estimator__backbone="/no/such/encoder",
    )
    with pytest.raises(DEPOConfigError) as err:
        validate(cfg)
    keys = [key for key, _ in err.value.problems]
    assert sorted(keys) == sorted(
        [
            "depo.filter.window",
            "depo.estimator.pooling",
            "depo.estimator.no_such_knob",
            "depo.labels.text_source",
            "actor_rollout_ref.rollout.n",
            "trainer.use_v1",
            "depo.estimator.backbone",
        ]
    )
    assert [line.split(":")[0] for line in str(err.value).splitlines()] == keys


def test_valid_variants_pass():
    validate(with_values(depo__estimator__placement="cpu", depo__filter__explore_rate=0.1))
    validate(
        with_values(
            depo__labels__logprob_source="rollout_log_probs", actor_rollout_ref__rollout__calculate_log_probs=True
        )
    )
    # depo off: plain verl, DEPO-only requirements are not enforced
    settings = validate(with_values(depo__enable=False, actor_rollout_ref__rollout__n=1))
    assert not settings.uses_estimator
    # "GRPO + masking": no estimator, so whether its backbone exists is not checked
    settings = validate(
        with_values(
            depo__filter__enable=False,
            depo__advantage_filter__mask_zero_adv_groups=True,
            depo__estimator__backbone="/nope",
        )
    )
    assert settings.enable and not settings.uses_estimator and settings.advantage_filter.mask_zero_adv_groups
    # a history-only selector: the filter runs (labels checked) but no estimator, so no backbone check
    settings = validate(with_values(depo__filter__selector__name="greso", depo__estimator__backbone="/nope"))
    assert settings.uses_filter and not settings.uses_estimator and settings.filter.selector.name == "greso"
    for name in ("depo", "hybrid"):
        with pytest.raises(DEPOConfigError, match="^depo.estimator.backbone:"):
            validate(with_values(depo__filter__selector__name=name, depo__estimator__backbone="/nope"))


def test_entry_point_refuses_a_bad_config_before_ray_naming_the_keys(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "recipe.depo.main_depo", *VALID, "depo.filter.window=[0.9,0.1]", "depo.enable=yes"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "depo: invalid config: depo.filter.window:" in out.stderr, out.stderr[-2000:]
    assert "depo: invalid config: depo.enable:" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "ray init" not in out.stdout.lower()


def test_bad_selector_and_guard_settings_are_refused_at_start_all_at_once():
    cfg = with_values(
        depo__filter__selector__name="mopps",
        depo__filter__selector__hybrid__prior_weight=-1,
        depo__filter__selector__posterior__decay=1.5,
        depo__filter__guard_threshold=-0.1,
        depo__filter__mode="dry_run",
    )
    with pytest.raises(DEPOConfigError) as err:
        validate(cfg)
    assert sorted(key for key, _ in err.value.problems) == [
        "depo.filter.guard_threshold",
        "depo.filter.mode",
        "depo.filter.selector.hybrid.prior_weight",
        "depo.filter.selector.name",
        "depo.filter.selector.posterior.decay",
    ]
