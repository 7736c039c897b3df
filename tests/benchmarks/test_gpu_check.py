"""benchmarks/gpu_check.py runs end to end (``--device cpu --quick``) where the GPU machine's
limits hold: no Ray and no verl importable, so the estimator's config base comes from the stand-in.
The prompt-length helper it shares with estimator_step_time.py is checked against the tokenizer."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def load_prompt_lengths():
    path = os.path.join(BENCHMARKS, "prompt_lengths.py")
    spec = importlib.util.spec_from_file_location("_bench_prompt_lengths", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A machine without Ray or verl: both refuse to import in the child.
NO_RAY_NO_VERL = """
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "verl", "vllm"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Absent())
sys.argv = ["gpu_check.py"] + sys.argv[1:]
try:
    runpy.run_path(%r, run_name="__main__")
finally:
    assert not any(m.split(".")[0] in ("ray", "vllm") for m in sys.modules), "Ray or vLLM was imported"
"""


def test_gpu_check_quick_on_cpu_without_ray_or_verl(tmp_path):
    out = tmp_path / "check.json"
    script = NO_RAY_NO_VERL % os.path.join(BENCHMARKS, "gpu_check.py")
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script, "--device", "cpu", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "a stand-in for verl's BaseConfig" in run.stdout
    assert "prompt lengths: assumed DAPO-Math-17K problem lengths" in run.stdout
    assert "| encoder | settings | predict s |" in run.stdout and "| router encoder | in flight |" in run.stdout
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["device"] == "cpu"
    assert result["budget_s"] == 125.65 / 100
    rows = result["estimator"]
    assert {(r["encoder"], r["settings"]) for r in rows} == {
        (e, s) for e in ("tiny-distilbert", "tiny-bert") for s in ("paper", "defaults")
    }
    assert all(r["predict_s"] > 0 and r["update_s"] > 0 and r["scanned"] == 64 and r["labelled"] == 16 for r in rows)
    assert {(r["encoder"], r["in_flight"]) for r in result["router"]} == {
        (e, n) for e in ("tiny-distilbert", "tiny-bert") for n in (1, 32)
    }
    assert all(0 < r["p50_s"] <= r["p99_s"] for r in result["router"])


def test_prompt_texts_have_the_drawn_token_lengths(tmp_path):
    lengths_mod = load_prompt_lengths()
    from transformers import AutoTokenizer

    from recipe.depo.estimator import build_tiny_encoder

    rng = np.random.default_rng(0)
    lengths = lengths_mod.sample_lengths(2000, rng)
    assert lengths.min() >= lengths_mod.MIN_TOKENS and lengths.max() <= lengths_mod.MAX_TOKENS
    assert abs(np.median(lengths) - lengths_mod.MEDIAN_TOKENS) <= 5
    texts = lengths_mod.texts_of_lengths(lengths[:200], rng)
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_encoder(str(tmp_path / "enc"), max_position_embeddings=512))
    assert [len(ids) for ids in tokenizer(texts)["input_ids"]] == lengths[:200].tolist()
