"""EstimatorConfig defaults, validation and dict round trip."""

import pytest

from recipe.depo.estimator import EstimatorConfig


def test_paper_preset_is_the_authors_launcher_values():
    cfg = EstimatorConfig.paper()
    assert cfg.backbone == "distilbert-base-uncased"
    assert (cfg.lr, cfg.backbone_lr_scale, cfg.micro_batch_size) == (2e-4, 0.2, 8)
    assert (cfg.w_distill, cfg.w_ranking, cfg.ranking_threshold, cfg.ranking_margin) == (0.5, 3.0, 0.05, 0.5)
    assert (cfg.grad_clip, cfg.max_length, cfg.pooling, cfg.dtype) == (1.0, 512, "cls", "float32")


def test_dict_round_trip_and_lists_become_tuples():
    cfg = EstimatorConfig.from_dict({"hidden_dims": [64, 32], "lr": 1e-3})
    assert cfg.hidden_dims == (64, 32)
    again = EstimatorConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_from_omegaconf_block():
    omegaconf = pytest.importorskip("omegaconf")
    block = omegaconf.OmegaConf.create({"backbone": "x", "hidden_dims": [8], "w_ranking": 0.0})
    cfg = EstimatorConfig.from_dict(block)
    assert cfg.hidden_dims == (8,) and cfg.w_ranking == 0.0


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="predict_batchsize"):
        EstimatorConfig.from_dict({"predict_batchsize": 16})


@pytest.mark.parametrize(
    "field,value",
    [
        ("pooling", "max"),
        ("dtype", "float16"),
        ("device", "tpu"),
        ("max_length", 0),
        ("micro_batch_size", -1),
        ("predict_batch_size", 1.5),
        ("hidden_dims", (0,)),
        ("dropout", 1.0),
        ("lr", 0.0),
        ("backbone_lr_scale", -0.1),
        ("w_distill", -1.0),
        ("w_ranking", float("nan")),
        ("ranking_threshold", -0.01),
        ("ranking_margin", float("inf")),
        ("grad_clip", 0.0),
        ("backbone", ""),
        ("seed", "0"),
    ],
)
def test_invalid_field_is_named(field, value):
    with pytest.raises(ValueError, match=field):
        EstimatorConfig(**{field: value})
