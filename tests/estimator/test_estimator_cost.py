"""recipe/depo/estimator/cost.py: the start-up estimate of the estimator's seconds per step and the
one warning line when it exceeds 10% of a step."""

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recipe.depo.estimator import build_tiny_encoder
from recipe.depo.estimator.cost import (
    DEFAULT_PROMPT_TOKENS,
    KNOWN_SHAPES,
    EncoderShape,
    StepCost,
    encoder_shape,
    estimate_step_cost,
    prompt_tokens_of,
    slow_estimator_message,
    startup_warning,
)

DISTILBERT = EncoderShape(*KNOWN_SHAPES["distilbert-base-uncased"])
MINILM = EncoderShape(*KNOWN_SHAPES["all-MiniLM-L6-v2"])


def test_forward_flops_by_hand():
    shape = EncoderShape(layers=2, hidden=4, intermediate=8)
    # per layer and token: 2 * (4 h^2 + 2 h ff + 2 L h) = 2 * (64 + 64 + 8 L)
    assert shape.forward_flops(10) == 2 * 2 * 10 * (64 + 64 + 80)
    # DistilBERT does ~4x MiniLM's work per token at DAPO-like lengths
    assert 3.5 < DISTILBERT.forward_flops(100) / MINILM.forward_flops(100) < 4.5


def test_step_cost_counts_each_pass():
    shape, rate = EncoderShape(2, 4, 8), 1.0
    one = shape.forward_flops(10) * 1.15  # padding
    cost = estimate_step_cost(shape, prompt_tokens=10, scanned=100, labelled=16, on_gpu=False, flops_per_second=rate)
    assert cost.predict_s == pytest.approx(100 * one)
    # forward + backward (3 forwards) + the ranking scheme's first pass, 16 prompts > micro-batch 8
    assert cost.update_s == pytest.approx(4 * 16 * one)
    two = estimate_step_cost(
        shape,
        prompt_tokens=10,
        scanned=100,
        labelled=16,
        updates_per_step=2,
        replay_steps=2,
        calibration_prompts=64,
        on_gpu=False,
        flops_per_second=rate,
    )
    assert two.update_s == pytest.approx((2 * 4 * 32 + 64) * one)
    fused = estimate_step_cost(
        shape, prompt_tokens=10, scanned=1, labelled=8, micro_batch_size=8, on_gpu=False, flops_per_second=rate
    )
    assert fused.update_s == pytest.approx(3 * 8 * one)  # one micro-batch: no first pass
    gpu = estimate_step_cost(DISTILBERT, prompt_tokens=100, scanned=1024, labelled=128, on_gpu=True)
    cpu = estimate_step_cost(DISTILBERT, prompt_tokens=100, scanned=1024, labelled=128, on_gpu=False)
    assert cpu.total_s > 100 * gpu.total_s


def _message(cost, step_seconds=125.65, updates=2, placement="cpu"):
    return slow_estimator_message(
        cost,
        step_seconds=step_seconds,
        shape=DISTILBERT,
        backbone="distilbert-base-uncased",
        placement=placement,
        prompt_tokens=106,
        scanned=1024,
        labelled=128,
        updates_per_step=updates,
    )


def test_the_warning_is_one_line_naming_what_to_change():
    slow = StepCost(predict_s=30.0, update_s=10.0, on_gpu=False)
    line = _message(slow)
    assert line is not None and "\n" not in line
    assert "~40.0 s per step" in line and "32% of an expected 125.65 s step" in line
    for fix in (
        "placement=colocated or separate",
        "smaller depo.estimator.backbone",
        "updates_per_step=1",
        "lower depo.filter.max_scan",
        "expected_step_seconds",
    ):
        assert fix in line, fix
    assert _message(StepCost(12.0, 0.6, False)) is not None  # 12.6 s: just over 10%
    assert _message(StepCost(12.0, 0.5, False)) is None  # 12.5 s: just under
    assert _message(StepCost(1.0, 1.0, True)) is None
    assert _message(slow, step_seconds=0) is None  # 0 turns it off
    gpu_line = _message(StepCost(5.0, 20.0, True), updates=1, placement="colocated")
    assert "run it on a GPU" not in gpu_line and "updates_per_step" not in gpu_line.split("to cut it")[1]


def test_encoder_shape_from_a_local_dir_or_a_known_hub_id(tmp_path):
    built = build_tiny_encoder(str(tmp_path / "enc"), hidden_size=32, num_layers=3, intermediate_size=48)
    assert encoder_shape(built) == EncoderShape(3, 32, 48)
    assert encoder_shape("distilbert-base-uncased") == EncoderShape(6, 768, 3072)
    assert encoder_shape("someone/unknown-encoder") is None  # nothing downloaded: no estimate


def _config(tmp_path, **depo_estimator):
    return {
        "data": {"train_batch_size": 128, "train_files": [str(tmp_path / "absent.parquet")]},
        "trainer": {"device": "cuda"},
        "depo": {"enable": True, "estimator": {"backbone": "distilbert-base-uncased", **depo_estimator}},
    }


def test_startup_warning_from_the_run_config(tmp_path):
    # the authors' encoder on a GPU: well within 10% of the paper's step
    assert startup_warning(_config(tmp_path)) is None
    # the same on CPU costs minutes per step
    line = startup_warning(_config(tmp_path, placement="cpu"))
    assert line is not None and "on CPU, placement cpu" in line and "1024 scanned" in line
    assert startup_warning(_config(tmp_path, placement="cpu", expected_step_seconds=0)) is None
    off = _config(tmp_path, placement="cpu")
    off["depo"]["enable"] = False
    assert startup_warning(off) is None


def test_prompt_tokens_come_from_the_training_data(tmp_path):
    path = tmp_path / "train.parquet"
    rows = [
        {"prompt": [{"role": "user", "content": "template " + "x" * 1000}], "extra_info": {"question": "y" * 400}}
        for _ in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    config = {"data": {"train_files": str(path)}, "depo": {"labels": {"text_source": "auto"}}}
    assert prompt_tokens_of(config, 512) == pytest.approx(400 / 4 + 2)  # the bare problem, not the template
    assert prompt_tokens_of(config, 64) == 64  # truncated at max_length
    assert prompt_tokens_of({"data": {"train_files": str(tmp_path / "none.parquet")}}, 512) == DEFAULT_PROMPT_TOKENS


def test_main_depo_prints_the_warning_at_start(tmp_path):
    """The entry point's start-up path: one warning line, before the data check stops the run."""
    missing = tmp_path / "train.parquet"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipe.depo.main_depo",
            "depo.estimator.placement=cpu",
            "data.train_batch_size=128",
            f"data.train_files={missing}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    text = out.stdout + out.stderr
    assert text.count("depo: the difficulty estimator may cost") == 1, text[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("depo: cannot train on this data:")
