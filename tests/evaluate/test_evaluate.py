"""python -m recipe.depo.evaluate with the CPU demo's tiny policy on two small arithmetic sets."""

import json
from pathlib import Path

import pandas as pd
import pytest

from recipe.depo.evaluate import cli
from recipe.depo.evaluate.backends import HFBackend
from recipe.depo.reward import compute_score

N = 4


def _args(model, data, out, *extra):
    return ["--model", str(model), "--data", str(data), "--output", str(out), "--n", str(N),
            "--max-response-length", "12", "--batch-size", "2", *extra]  # fmt: skip


def _lines(folder):
    return {s: [json.loads(x) for x in (folder / f"{s}.jsonl").read_text().splitlines()] for s in ("easy", "hard")}


def test_per_query_lines_and_summary(tiny_policy, eval_dir, tmp_path, capsys):
    assert cli.main(_args(tiny_policy, eval_dir, tmp_path / "out")) == 0
    lines = _lines(tmp_path / "out")
    assert [r["index"] for r in lines["easy"]] == list(range(6))
    assert [r["index"] for r in lines["hard"]] == list(range(100, 105))
    for record in lines["easy"] + lines["hard"]:
        assert set(record) == {"index", "data_source", "prompt_hash", "n", "num_correct", "acc", "mean_response_length"}
        assert record["n"] == N and record["data_source"] == "arithmetic"
        assert record["acc"] == record["num_correct"] / N
        assert 1 <= record["mean_response_length"] <= 12
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for name, records in lines.items():
        assert summary["sets"][name]["queries"] == len(records)
        assert summary["sets"][name]["acc"] == pytest.approx(100 * sum(r["acc"] for r in records) / len(records))
    assert summary["Avg"] == pytest.approx((summary["sets"]["easy"]["acc"] + summary["sets"]["hard"]["acc"]) / 2)
    # the warm-started policy solves some of these and not others
    accs = [r["acc"] for r in lines["easy"] + lines["hard"]]
    assert 0 < sum(accs) < len(accs)
    out = capsys.readouterr().out
    assert "| **Avg** |" in out and f"Avg@{N}" in out


def test_scores_are_the_reward_of_the_decoded_responses(tiny_policy, eval_dir):
    """What evaluate counts as correct is recipe.depo.reward's acc of the decoded sample."""
    from recipe.depo.evaluate.backends import Sampling, chat_ids
    from recipe.depo.evaluate.data import load_set

    query = load_set(eval_dir / "easy.parquet")[0]
    backend = HFBackend(tiny_policy)
    gens = backend.generate([chat_ids(backend.tokenizer, query.messages)], [123], Sampling(N, 1.0, 1.0, 12))[0]
    assert len(gens) == N
    expected = [compute_score("arithmetic", g.text, query.ground_truth)["acc"] for g in gens]
    assert cli.score(query, [g.text for g in gens]) == expected
    # per-query seeding: the same seed gives the same samples, whatever ran before
    again = backend.generate([chat_ids(backend.tokenizer, query.messages)], [123], Sampling(N, 1.0, 1.0, 12))[0]
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]


def test_a_querys_samples_do_not_depend_on_the_batch_it_shares(tiny_policy):
    """Queries of different lengths batch together (left-padded); each row samples from its own seed."""
    from recipe.depo.evaluate.backends import Sampling, chat_ids

    backend = HFBackend(tiny_policy)
    prompts = [chat_ids(backend.tokenizer, [{"role": "user", "content": q}]) for q in ("2+3=?", "17*23+456=?", "9-4=?")]
    assert len({len(p) for p in prompts}) > 1
    sampling = Sampling(n=3, temperature=1.0, top_p=1.0, max_response_length=10)
    alone = backend.generate([prompts[1]], [11], sampling)[0]
    batched = backend.generate(prompts, [5, 11, 7], sampling)
    assert [g.token_ids for g in batched[1]] == [g.token_ids for g in alone]
    # and the samples are samples: other seeds draw otherwise
    others = [g.token_ids for q in backend.generate([prompts[1]] * 4, [1, 2, 3, 4], sampling) for g in q]
    assert len({tuple(t) for t in others}) > 1


@pytest.mark.parametrize(
    "temperature, top_p, expected",
    [
        (1.0, 1.0, [0.5, 0.3, 0.15, 0.05]),
        # top-p 0.75: the tail 0.05 + 0.15 <= 0.25 goes, the nucleus renormalised: 0.5 / 0.8, 0.3 / 0.8
        (1.0, 0.75, [0.625, 0.375, 0.0, 0.0]),
        # temperature 2: p ** (1 / 2), renormalised (their sum is 1.8657)
        (2.0, 1.0, [0.5**0.5 / 1.8657, 0.3**0.5 / 1.8657, 0.15**0.5 / 1.8657, 0.05**0.5 / 1.8657]),
    ],
)
def test_row_seeded_sampler_draws_from_the_tempered_nucleus(temperature, top_p, expected):
    import torch

    from recipe.depo.seeded_sampling import RowSeededSampler

    rows = 20000
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(rows, 1)
    sampler = RowSeededSampler(list(range(rows)), temperature, top_p, "cpu")
    picks = sampler(None, logits).argmax(dim=-1)
    freq = torch.bincount(picks, minlength=4).float() / rows
    # 4 standard errors of a proportion at 20,000 draws is at most 0.014
    assert torch.allclose(freq, torch.tensor(expected), atol=0.014), (freq, expected)
    assert all(freq[i] == 0 for i, e in enumerate(expected) if e == 0)


def test_row_seeded_sampler_keeps_the_top_k_and_a_seed_fixes_a_rows_draw():
    import torch

    from recipe.depo.seeded_sampling import RowSeededSampler, sample_seed

    rows = 20000
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(rows, 1)
    picks = RowSeededSampler(list(range(rows)), 1.0, 1.0, "cpu", top_k=2)(None, logits).argmax(dim=-1)
    freq = torch.bincount(picks, minlength=4).float() / rows
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.014), freq
    # a row's draw is its seed's, whatever rows share the batch
    seeds = [sample_seed("run", i) for i in range(8)]
    alone = [RowSeededSampler([s], 1.0, 1.0, "cpu")(None, logits[:1]).argmax(-1).item() for s in seeds]
    together = RowSeededSampler(seeds[::-1], 1.0, 1.0, "cpu")(None, logits[:8]).argmax(-1).tolist()
    assert together[::-1] == alone
    assert sample_seed(3, 1) == sample_seed("3", "1") != sample_seed(3, 2)


def test_resume_after_an_interrupted_run_gives_the_uninterrupted_result(tiny_policy, eval_dir, tmp_path, monkeypatch):
    assert cli.main(_args(tiny_policy, eval_dir, tmp_path / "whole")) == 0

    calls = []
    original = HFBackend.generate

    def interrupted(self, prompts, seeds, sampling):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second batch
        return original(self, prompts, seeds, sampling)

    monkeypatch.setattr(HFBackend, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(_args(tiny_policy, eval_dir, tmp_path / "resumed"))
    part = tmp_path / "resumed" / "easy.jsonl"
    assert len(part.read_text().splitlines()) == 2  # the first batch of 2 queries, whole lines
    assert not (tmp_path / "resumed" / "summary.json").exists()
    with open(part, "a") as handle:  # and a torn line, as a power loss mid-write would leave
        handle.write('{"index": 2, "data_source": "arithm')

    calls.clear()
    monkeypatch.setattr(HFBackend, "generate", original)
    monkeypatch.setattr(HFBackend, "generate", lambda self, p, s, c: calls.append(len(p)) or original(self, p, s, c))
    assert cli.main(_args(tiny_policy, eval_dir, tmp_path / "resumed")) == 0
    assert sum(calls) == 6 - 2 + 5  # only what was missing was generated
    assert _lines(tmp_path / "resumed") == _lines(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text()) == whole

    # a finished folder: nothing is generated, nothing is loaded
    monkeypatch.setattr(HFBackend, "__init__", lambda *a, **k: pytest.fail("model loaded for a finished run"))
    assert cli.main(_args(tiny_policy, eval_dir, tmp_path / "resumed")) == 0


def _eval_parquet(path, **changes):
    from data_prep.arithmetic import build_rows

    rows = build_rows("test", seed=7, count=3)
    for row in rows:
        for key, value in changes.items():
            row[key] = value
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_ground_truth", "row 0: reward_model has no 'ground_truth'"),
        ("empty_ground_truth", "row 0: reward_model.ground_truth must be a non-empty string"),
        ("unknown_source", "the reward cannot score data_source 'nope'"),
        ("no_prompt_column", "missing column(s) ['prompt']"),
        ("empty_folder", "no .parquet files in this folder"),
        ("csv_data", "expected a .parquet file"),
        ("backend", "--backend 'tpu': unknown backend"),
        ("checkpoint_without_actor", "a verl checkpoint folder without an actor/ folder"),
        ("actor_without_shards", "holds no FSDP actor shards"),
        ("missing_model", "no such directory"),
        ("bad_n", "--n must be >= 1"),
        ("changed_settings", "was started with n=4, this run has 3"),
    ],
)
def test_bad_input_is_one_clear_error_before_any_generation(case, message, tiny_policy, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(HFBackend, "__init__", lambda *a, **k: pytest.fail("model loaded despite bad input"))
    data = _eval_parquet(tmp_path / "set.parquet")
    model, extra = tiny_policy, []
    if case == "no_ground_truth":
        data = _eval_parquet(tmp_path / "set.parquet", reward_model={"style": "rule"})
    elif case == "empty_ground_truth":
        data = _eval_parquet(tmp_path / "set.parquet", reward_model={"style": "rule", "ground_truth": ""})
    elif case == "unknown_source":
        data = _eval_parquet(tmp_path / "set.parquet", data_source="nope")
    elif case == "no_prompt_column":
        pd.read_parquet(data).drop(columns=["prompt"]).to_parquet(data)
    elif case == "empty_folder":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "csv_data":
        data = tmp_path / "set.csv"
        data.write_text("a,b\n1,2\n")
    elif case == "backend":
        extra = ["--backend", "tpu"]
    elif case == "checkpoint_without_actor":
        model = tmp_path / "global_step_5"
        (model / "depo").mkdir(parents=True)
    elif case == "actor_without_shards":
        model = tmp_path / "global_step_5"
        (model / "actor" / "huggingface").mkdir(parents=True)
    elif case == "missing_model":
        model = tmp_path / "nowhere"
    elif case == "bad_n":
        extra = ["--n", "0"]
    elif case == "changed_settings":
        (tmp_path / "out").mkdir()
        stored = {"model": str(Path(tiny_policy).resolve()), "backend": "hf", "n": 4, "temperature": 1.0}
        stored.update(top_p=1.0, max_response_length=12, seed=0)
        (tmp_path / "out" / cli.CONFIG_FILE).write_text(json.dumps(stored))
        extra = ["--n", "3", "--backend", "hf"]
    argv = _args(model, data, tmp_path / "out") + extra
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


@pytest.mark.parametrize("flag", [False, True])
def test_enforce_eager_reaches_vllm_only_when_asked(flag, tiny_policy, monkeypatch):
    """vLLM is not in this environment (a GPU engine; the vLLM venv's evaluate runs are in
    tests/launchers): a stand-in ``vllm.LLM`` records what evaluate's backend hands it."""
    import sys
    import types

    seen = {}
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kwargs: seen.update(kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from recipe.depo.evaluate.backends import VLLMBackend

    VLLMBackend(str(tiny_policy), seed=3, enforce_eager=flag)
    assert seen["model"] == str(tiny_policy) and seen["seed"] == 3
    assert seen.get("enforce_eager", False) is flag
    args = cli.parser().parse_args(["--model", "m", "--data", "d", "--output", "o", *(["--enforce-eager"] * flag)])
    assert args.enforce_eager is flag
