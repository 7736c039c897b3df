from pathlib import Path

import pandas as pd
import pytest

from data_prep import polaris_filter as pf
from data_prep.common import DataPrepError, make_row, write_parquet_atomic

VOCAB = ["<pad>", "<eos>", "<unk>", "the", "answer", "is", "\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer Qwen2 with random weights and a word-level tokenizer built here: nothing downloaded."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny_qwen2")
    # separate directory: next to a Qwen2 config.json, AutoTokenizer would rebuild Qwen2's BPE tokenizer
    tokenizer_path = tmp_path_factory.mktemp("tiny_tokenizer")
    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}answer"
    tokenizer.save_pretrained(tokenizer_path)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    return str(path), str(tokenizer_path)


def _training_parquet(path: Path, count: int = 6) -> Path:
    rows = [
        make_row(
            data_source="arithmetic",
            prompt_text=f"what is {i % 4} + 1",
            question=f"what is {i % 4} + 1",
            ground_truth=str(i % 4 + 1),
            index=i,
            split="train",
        )
        for i in range(count)
    ]
    write_parquet_atomic(rows, path)
    return path


def _args(tmp_path, model, work, output, *extra):
    model, tokenizer = model if isinstance(model, tuple) else (model, model)
    return pf.parser().parse_args(
        [
            "--input",
            str(tmp_path / "train.parquet"),
            "--output",
            str(output),
            "--model",
            model,
            "--tokenizer",
            tokenizer,
            "--work-dir",
            str(work),
            "--n",
            "4",
            "--shard-size",
            "2",
            "--max-new-tokens",
            "3",
            "--backend",
            "transformers",
            "--seed",
            "7",
            "--batch-size",
            "2",
            "--save-responses",
            *extra,
        ]
    )


class Interrupt(Exception):
    pass


def test_end_to_end_with_interruption_and_resume(tmp_path, tiny_model):
    _training_parquet(tmp_path / "train.parquet")

    # reference: one uninterrupted run
    ref = pf.run(
        _args(
            tmp_path,
            tiny_model,
            tmp_path / "work_ref",
            tmp_path / "ref.parquet",
            "--all-output",
            str(tmp_path / "ref_all.parquet"),
        )
    )
    assert ref["stats"] == {"shards": 3, "shards_resumed": 0, "shards_run": 3}

    # interrupted after the first shard: the shard is on disk, no output parquet was written
    def stop_after_first(shard):
        raise Interrupt(f"killed after shard {shard}")

    work = tmp_path / "work"
    out = tmp_path / "kept.parquet"
    with pytest.raises(Interrupt):
        pf.run(_args(tmp_path, tiny_model, work, out), on_shard_done=stop_after_first)
    assert sorted(p.name for p in work.iterdir()) == ["meta.json", "shard-00000.parquet"]
    assert not out.exists()
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]

    # resume: shard 0 is skipped, only the 4 remaining prompts are sampled
    sampled = []
    real_factory_args = _args(tmp_path, tiny_model, work, out)

    def counting_factory():
        generator = pf.make_generator(
            "transformers",
            tiny_model[0],
            pf.SamplingSettings(n=4, max_new_tokens=3),
            batch_size=2,
            tokenizer_path=tiny_model[1],
        )
        original = generator.generate

        def generate(prompts, n, seed):
            sampled.extend(prompts)
            return original(prompts, n, seed)

        generator.generate = generate
        return generator

    resumed = pf.run(real_factory_args, generator_factory=counting_factory)
    assert resumed["stats"] == {"shards": 3, "shards_resumed": 1, "shards_run": 2}
    assert len(sampled) == 4

    # same seeds per shard: the resumed run equals the uninterrupted one
    pd.testing.assert_frame_equal(resumed["scored"], ref["scored"])

    kept = pd.read_parquet(out)
    scored = pd.read_parquet(tmp_path / "ref_all.parquet")
    assert {"pass_rate", "n_correct", "n_samples"} <= set(kept.columns)
    assert len(scored) == 6 and set(scored["n_samples"]) == {4}
    assert list(kept["pass_rate"]) == [p for p in scored["pass_rate"] if p < 1.0]
    assert all(scored["polaris_keep"] == (scored["pass_rate"] < 1.0))

    # pass rates are what the reward says about the saved responses
    shard = pd.read_parquet(work / "shard-00001.parquet")
    from recipe.depo.reward import compute_score

    for row, responses, n_correct in zip(shard["row"], shard["responses"], shard["n_correct"]):
        truth = str(row % 4 + 1)
        assert n_correct == sum(compute_score("arithmetic", r, truth)["acc"] for r in responses)

    # a finished work dir reruns without sampling at all
    again = pf.run(
        _args(tmp_path, tiny_model, work, tmp_path / "again.parquet"), generator_factory=lambda: pytest.fail("sampled")
    )
    assert again["stats"]["shards_resumed"] == 3


def test_work_dir_with_other_settings_is_refused(tmp_path, tiny_model):
    _training_parquet(tmp_path / "train.parquet", count=2)
    work = tmp_path / "work"
    pf.run(_args(tmp_path, tiny_model, work, tmp_path / "a.parquet", "--drop-all-correct"))
    args = _args(tmp_path, tiny_model, work, tmp_path / "b.parquet")
    args.n = 2
    with pytest.raises(DataPrepError, match="different settings.*n: 4 -> 2"):
        pf.run(args)


class FixedGenerator:
    """Row i answers correctly in exactly CORRECT[i] of its samples."""

    CORRECT = [4, 0, 1, 2, 3, 4]

    def generate(self, prompts, n, seed):
        out = []
        for prompt in prompts:
            i = int(prompt[0]["content"].split()[-1])
            truth = i % 4 + 1
            out.append([f"\\boxed{{{truth}}}"] * self.CORRECT[i] + ["\\boxed{0}"] * (n - self.CORRECT[i]))
        return out


def _numbered_parquet(path):
    rows = [
        make_row(
            data_source="arithmetic",
            prompt_text=f"row {i}",
            question=f"row {i}",
            ground_truth=str(i % 4 + 1),
            index=i,
            split="train",
        )
        for i in range(6)
    ]
    write_parquet_atomic(rows, path)


@pytest.mark.parametrize(
    "flags,expected_rows",
    [
        ([], [1, 2, 3, 4]),  # Polaris: only the 4/4 rows go
        (["--drop-all-wrong"], [2, 3, 4]),
        (["--no-drop-all-correct"], [0, 1, 2, 3, 4, 5]),
    ],
)
def test_keep_rules_exact(tmp_path, flags, expected_rows):
    _numbered_parquet(tmp_path / "train.parquet")
    args = _args(tmp_path, "fake-model", tmp_path / "work", tmp_path / "out.parquet", *flags)
    result = pf.run(args, generator_factory=FixedGenerator)
    assert [int(q.split()[-1]) for q in (e["question"] for e in result["kept"]["extra_info"])] == expected_rows
    assert list(result["scored"]["n_correct"]) == FixedGenerator.CORRECT


def test_hard_skew_thins_easy_problems_deterministically():
    rule = pf.KeepRule(hard_skew=2.0)
    easy = sum(rule.keep(0.875, seed=0, row=r)[0] for r in range(2000))
    hard = sum(rule.keep(0.125, seed=0, row=r)[0] for r in range(2000))
    assert easy / 2000 == pytest.approx(0.125**2, abs=0.02)
    assert hard / 2000 == pytest.approx(0.875**2, abs=0.03)
    assert rule.keep(0.0, seed=0, row=1) == (True, "kept")
    assert [rule.keep(0.5, seed=3, row=r) for r in range(50)] == [rule.keep(0.5, seed=3, row=r) for r in range(50)]


def test_unknown_data_source_fails_before_sampling(tmp_path):
    rows = [make_row(data_source="mystery", prompt_text="q", question="q", ground_truth="1", index=0, split="train")]
    write_parquet_atomic(rows, tmp_path / "train.parquet")
    args = _args(tmp_path, "fake", tmp_path / "work", tmp_path / "out.parquet")
    with pytest.raises(ValueError, match="mystery"):
        pf.run(args, generator_factory=lambda: pytest.fail("sampled"))


def test_cli_refuses_existing_output_and_missing_columns(tmp_path, capsys):
    _numbered_parquet(tmp_path / "train.parquet")
    (tmp_path / "out.parquet").write_text("x")
    argv = [
        "--input",
        str(tmp_path / "train.parquet"),
        "--output",
        str(tmp_path / "out.parquet"),
        "--model",
        "m",
        "--work-dir",
        str(tmp_path / "w"),
    ]
    assert pf.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    pd.DataFrame({"prompt": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    argv = [
        "--input",
        str(tmp_path / "bad.parquet"),
        "--output",
        str(tmp_path / "o2.parquet"),
        "--model",
        "m",
        "--work-dir",
        str(tmp_path / "w"),
    ]
    assert pf.main(argv) == 2
    assert "missing column" in capsys.readouterr().err


def test_cli_greedy_run_through_main(tmp_path, tiny_model, capsys):
    _training_parquet(tmp_path / "train.parquet", count=3)
    out = tmp_path / "kept.parquet"
    argv = [
        "--input",
        str(tmp_path / "train.parquet"),
        "--output",
        str(out),
        "--model",
        tiny_model[0],
        "--tokenizer",
        tiny_model[1],
        "--work-dir",
        str(tmp_path / "w"),
        "--n",
        "3",
        "--temperature",
        "0",
        "--max-new-tokens",
        "2",
        "--backend",
        "transformers",
        "--no-drop-all-correct",
        "--all-output",
        str(tmp_path / "all.parquet"),
    ]
    assert pf.main(argv) == 0
    scored = pd.read_parquet(tmp_path / "all.parquet")
    assert len(scored) == 3 and set(scored["n_correct"]) <= {0, 3}  # greedy: all n samples agree
    printed = capsys.readouterr().out
    assert "shards            1 (0 resumed, 1 run)" in printed and "pass-rate distribution" in printed


# ---------------------------------------------------------------- issue 25: a model that will not load


def _cli_argv(tmp_path, model, tokenizer=None):
    argv = ["--input", str(tmp_path / "train.parquet"), "--output", str(tmp_path / "kept.parquet")]
    argv += ["--model", model, "--work-dir", str(tmp_path / "w"), "--n", "2", "--max-new-tokens", "2"]
    argv += ["--backend", "transformers", "--temperature", "0", "--no-drop-all-correct"]
    return argv + (["--tokenizer", tokenizer] if tokenizer else [])


def test_a_model_that_does_not_load_is_one_line_and_leaves_nothing(tmp_path, capsys):
    _training_parquet(tmp_path / "train.parquet", count=2)
    missing = str(tmp_path / "no-such-model")
    assert pf.main(_cli_argv(tmp_path, missing)) == 2
    assert _error_line(capsys) == f"error: --model {missing}: no such file or directory"
    broken = tmp_path / "broken-model"  # a directory that is no model: found only when loading it
    broken.mkdir()
    assert pf.main(_cli_argv(tmp_path, str(broken))) == 2
    assert _error_line(capsys).startswith(f"error: cannot load --model {broken}: ")
    assert not (tmp_path / "w" / pf.META_FILE).exists() and not (tmp_path / "kept.parquet").exists()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_the_corrected_rerun_after_a_bad_model_runs(tmp_path, tiny_model, capsys):
    _training_parquet(tmp_path / "train.parquet", count=2)
    (tmp_path / "typo").mkdir()
    assert pf.main(_cli_argv(tmp_path, str(tmp_path / "typo"), tiny_model[1])) == 2
    capsys.readouterr()
    assert pf.main(_cli_argv(tmp_path, *tiny_model)) == 0, capsys.readouterr().err
    assert len(pd.read_parquet(tmp_path / "kept.parquet")) == 2
    assert '"model": "' + tiny_model[0] in (tmp_path / "w" / pf.META_FILE).read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top-p", "1.5"], "--top-p must lie in (0, 1], got 1.5"),
        (["--top-p", "0"], "--top-p must lie in (0, 1]"),
        (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--hard-skew", "nan"], "--hard-skew must be a finite number >= 0, got nan"),
        (["--gpu-memory-utilization", "2"], "--gpu-memory-utilization must lie in (0, 1]"),
    ],
)
def test_bad_numbers_are_refused_before_the_model_loads(tmp_path, tiny_model, capsys, flags, message):
    _training_parquet(tmp_path / "train.parquet", count=2)
    assert pf.main([*_cli_argv(tmp_path, *tiny_model), *flags]) == 2
    assert _error_line(capsys).startswith(f"error: {message}")
    assert not (tmp_path / "w").exists()


def test_a_work_dir_that_is_a_file_is_refused(tmp_path, tiny_model, capsys):
    _training_parquet(tmp_path / "train.parquet", count=2)
    argv = _cli_argv(tmp_path, *tiny_model)
    argv[argv.index("--work-dir") + 1] = str(tmp_path / "train.parquet")
    assert pf.main(argv) == 2
    assert "is a file; give a directory" in _error_line(capsys)


def test_settings_left_by_a_run_that_sampled_nothing_do_not_block_a_rerun(tmp_path, tiny_model):
    """A work dir that an older version left with only meta.json (the model never loaded)."""
    _numbered_parquet(tmp_path / "train.parquet")
    work = tmp_path / "work"
    work.mkdir()
    (work / pf.META_FILE).write_text('{"model": "typo", "n": 4}')
    result = pf.run(_args(tmp_path, "fake", work, tmp_path / "out.parquet"), generator_factory=FixedGenerator)
    assert result["stats"]["shards_run"] == 3
    assert '"model": "fake"' in (work / pf.META_FILE).read_text()


def test_shards_without_settings_are_refused(tmp_path):
    _training_parquet(tmp_path / "train.parquet", count=2)
    work = tmp_path / "work"
    work.mkdir()
    (work / "shard-00000.parquet").write_text("x")
    with pytest.raises(DataPrepError, match="no meta.json"):
        pf.run(_args(tmp_path, "fake", work, tmp_path / "out.parquet"), generator_factory=FixedGenerator)
