import json
from pathlib import Path

import pandas as pd
import pytest

from data_prep import dapo_math_17k, eval_sets, nt, or1
from data_prep.common import BOXED_INSTRUCTION, REQUIRED_COLUMNS, read_table
from recipe.depo.reward import compute_score

FIXTURES = Path(__file__).parent / "fixtures"
DAPO = FIXTURES / "dapo_math_17k.jsonl"
OR1 = FIXTURES / "or1_math.parquet"
EVAL = FIXTURES / "eval"


def _rows(path):
    frame = pd.read_parquet(path)
    assert list(frame.columns) == list(REQUIRED_COLUMNS)
    return frame.to_dict("records")


def _check_schema(row, data_source):
    assert row["data_source"] == data_source
    assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"
    assert row["reward_model"]["style"] == "rule" and row["reward_model"]["ground_truth"]
    assert row["extra_info"]["question"]


# ---------------------------------------------------------------- DAPO-Math-17k


def test_dapo_dedup_and_template(tmp_path, capsys):
    out = tmp_path / "dapo.parquet"
    assert dapo_math_17k.main(["--input", str(DAPO), "--output", str(out)]) == 0
    rows = _rows(out)
    assert [r["extra_info"]["question"] for r in rows] == [
        "Let $f(x)=x^2+1$. Find $f(3)$.",
        "How many positive divisors does $36$ have?",
        "已知正整数 $n$ 满足 $n^2 = 144$，求 $n$。",
    ]
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["10", "9", "12"]
    assert [r["extra_info"]["lang"] for r in rows] == ["en", "en", "zh"]
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 2]
    assert [r["extra_info"]["source_index"] for r in rows] == ["a1", "b1", "c1"]
    for r in rows:
        _check_schema(r, "math_dapo")
        content = r["prompt"][0]["content"]
        assert content.startswith("Solve the following math problem step by step.")
        assert content.endswith('Remember to put your answer on its own line after "Answer:".')
        assert r["extra_info"]["question"] in content
        assert r["ability"] == "MATH" and r["extra_info"]["split"] == "train"
    printed = capsys.readouterr().out
    assert "rows read         9" in printed
    assert "duplicates removed 4" in printed and "1 had a different answer" in printed
    assert "prompt is not in the DAPO template" in printed and "row 7" in printed
    assert "empty ground_truth" in printed and "row 8" in printed
    assert f"rows written      3 -> {out}" in printed
    # the reward reads these rows the DAPO way
    assert (
        compute_score(rows[0]["data_source"], "f(3)=10\nAnswer: 10", rows[0]["reward_model"]["ground_truth"])["acc"]
        == 1.0
    )


@pytest.mark.parametrize("lang,expected", [("en", ["10", "9"]), ("zh", ["12"])])
def test_dapo_language_filter(tmp_path, capsys, lang, expected):
    out = tmp_path / "dapo.parquet"
    assert dapo_math_17k.main(["--input", str(DAPO), "--output", str(out), "--lang", lang]) == 0
    assert [r["reward_model"]["ground_truth"] for r in _rows(out)] == expected
    other = "zh" if lang == "en" else "en"
    assert f"language {other} (kept: {lang})" in capsys.readouterr().out


def test_dapo_held_out_split(tmp_path):
    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    args = ["--input", str(DAPO), "--output", str(train), "--val-size", "1", "--val-output", str(val), "--seed", "3"]
    assert dapo_math_17k.main(args) == 0
    train_rows, val_rows = _rows(train), _rows(val)
    assert len(train_rows) == 2 and len(val_rows) == 1
    assert {r["extra_info"]["split"] for r in train_rows} == {"train"} and val_rows[0]["extra_info"]["split"] == "val"
    questions = [r["extra_info"]["question"] for r in train_rows + val_rows]
    assert len(set(questions)) == 3
    # same seed, same split
    train2, val2 = tmp_path / "t2.parquet", tmp_path / "v2.parquet"
    dapo_math_17k.main(
        ["--input", str(DAPO), "--output", str(train2), "--val-size", "1", "--val-output", str(val2), "--seed", "3"]
    )
    assert _rows(val2)[0]["extra_info"]["question"] == val_rows[0]["extra_info"]["question"]


def test_dapo_strip_template_roundtrip():
    problem = "Line one.\n\nLine two with $x$."
    text = dapo_math_17k.TEMPLATE_HEAD + problem + dapo_math_17k.TEMPLATE_TAIL
    assert dapo_math_17k.strip_template(text) == problem
    assert dapo_math_17k.strip_template("What is 2+2?") is None


# ---------------------------------------------------------------- OR1


def test_or1_json_ground_truth_and_difficulty(tmp_path, capsys):
    out = tmp_path / "or1.parquet"
    assert or1.main(["--input", str(OR1), "--output", str(out)]) == 0
    rows = _rows(out)
    assert [r["extra_info"]["question"] for r in rows] == [
        "Compute $\\frac{1}{2}+\\frac{1}{3}$.",
        "Solve $x^2=16$ for the positive root.",
        "What is $3^4$?",  # the trailing instruction is stripped
    ]
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["\\frac{5}{6}", "4", "81"]
    assert [list(r["extra_info"]["answers"]) for r in rows] == [["\\frac{5}{6}"], ["4", "4.0"], ["81"]]
    assert rows[0]["extra_info"]["model_difficulty"]["DeepSeek-R1-Distill-Qwen-7B"] == 8
    assert rows[0]["extra_info"]["source_data_source"] == "train-math-deepscaler"
    for r in rows:
        _check_schema(r, "skywork_or1")
        assert r["prompt"][0]["content"] == f"{r['extra_info']['question']}\n\n{BOXED_INSTRUCTION}"
    printed = capsys.readouterr().out
    assert "DeepSeek-R1-Distill-Qwen-7B solved 16/16, outside 1..15" in printed
    assert "DeepSeek-R1-Distill-Qwen-7B solved 0/16, outside 1..15" in printed
    assert "ground_truth is not a JSON list" in printed and "row 4" in printed
    assert "empty ground_truth" in printed and "row 5" in printed
    assert "duplicates removed 1" in printed
    assert (
        compute_score(
            "skywork_or1", "\\boxed{\\frac{10}{12}}", rows[0]["reward_model"]["ground_truth"], rows[0]["extra_info"]
        )["acc"]
        == 1.0
    )


def test_or1_difficulty_options(tmp_path):
    out = tmp_path / "a.parquet"
    assert or1.main(["--input", str(OR1), "--output", str(out), "--no-difficulty-filter"]) == 0
    assert len(_rows(out)) == 5
    out = tmp_path / "b.parquet"
    args = [
        "--input",
        str(OR1),
        "--output",
        str(out),
        "--difficulty-model",
        "DeepSeek-R1-Distill-Qwen-32B",
        "--difficulty-range",
        "12",
        "16",
    ]
    assert or1.main(args) == 0
    assert [r["reward_model"]["ground_truth"] for r in _rows(out)] == ["\\frac{5}{6}", "4", "17", "81"]


def test_or1_decode_answers():
    assert or1.decode_answers('["1", "2"]') == ["1", "2"]
    assert or1.decode_answers('"7"') == ["7"]
    assert or1.decode_answers("[") is None
    assert or1.decode_answers("[]") == []


# ---------------------------------------------------------------- eval sets


def test_eval_sets_all_five(tmp_path, capsys):
    out = tmp_path / "eval"
    assert eval_sets.main(["--input", str(EVAL), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in eval_sets.EVAL_SETS)
    truths = {
        name: [r["reward_model"]["ground_truth"] for r in _rows(out / f"{name}.parquet")]
        for name in eval_sets.EVAL_SETS
    }
    assert truths == {
        "gsm8k": ["72", "14400"],
        "math500": ["\\left( 3, \\frac{\\pi}{2} \\right)", "2"],
        "amc23": ["7", "27"],
        "olympiadbench": ["2, -2", "1"],
        "minerva": ["33", "0.50"],
    }
    for name in eval_sets.EVAL_SETS:
        for r in _rows(out / f"{name}.parquet"):
            _check_schema(r, name)
            assert r["prompt"][0]["content"].endswith(BOXED_INSTRUCTION)
            assert r["extra_info"]["split"] == "test"
    math500 = _rows(out / "math500.parquet")[0]["extra_info"]
    assert (math500["subject"], math500["level"], math500["unique_id"]) == (
        "Precalculus",
        2,
        "test/precalculus/807.json",
    )
    captured = capsys.readouterr()
    assert "gsm8k: 2 rows, the paper evaluates on 1319" in captured.err
    assert "empty or unparseable answer" in captured.out and "gsm8k.jsonl row 2" in captured.out
    # the reward agrees with the stored answers
    assert compute_score("olympiadbench", "\\boxed{-2, 2}", truths["olympiadbench"][0])["acc"] == 1.0
    assert compute_score("gsm8k", "\\boxed{14,400}", truths["gsm8k"][1])["acc"] == 1.0
    assert compute_score("minerva", "\\boxed{0.5}", truths["minerva"][1])["acc"] == 1.0


def test_eval_sets_subset_and_expected_counts(tmp_path, capsys):
    out = tmp_path / "eval"
    assert eval_sets.main(["--input", str(EVAL), "--output", str(out), "--sets", "amc23"]) == 0
    assert [p.name for p in out.iterdir()] == ["amc23.parquet"]
    assert {s.name: s.expected_rows for s in eval_sets.EVAL_SETS.values()} == {
        "gsm8k": 1319,
        "math500": 500,
        "amc23": 40,
        "olympiadbench": 674,
        "minerva": 272,
    }


def test_gsm8k_answer_parsing():
    assert eval_sets.gsm8k_answer("work\n#### 1,234") == "1234"
    assert eval_sets.gsm8k_answer("no marker") is None


# ---------------------------------------------------------------- NT


def test_nt_default_preset_numina_tir(tmp_path, capsys):
    out = tmp_path / "nt.parquet"
    assert nt.main(["--input", str(FIXTURES / "nt" / "numina_tir.jsonl"), "--output", str(out)]) == 0
    rows = _rows(out)
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["\\frac{63}{400}", "2"]
    assert {r["extra_info"]["source"] for r in rows} == {"AI-MO/NuminaMath-TIR"}
    for r in rows:
        _check_schema(r, "nt")
    assert "no \\boxed{} answer in solution" in capsys.readouterr().out


def test_nt_preset_with_difficulty_and_generic_columns(tmp_path):
    out = tmp_path / "a.parquet"
    args = [
        "--preset",
        "deepmath-103k",
        "--difficulty-min",
        "5",
        "--input",
        str(FIXTURES / "nt" / "deepmath.jsonl"),
        "--output",
        str(out),
    ]
    assert nt.main(args) == 0
    rows = _rows(out)
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["1", "5"]
    assert [r["extra_info"]["difficulty"] for r in rows] == [5.0, 7.5]
    out = tmp_path / "b.parquet"
    args = [
        "--source",
        "my/set",
        "--problem-col",
        "question",
        "--answer-col",
        "final_answer",
        "--input",
        str(FIXTURES / "nt" / "deepmath.jsonl"),
        "--output",
        str(out),
    ]
    assert nt.main(args) == 0
    assert len(_rows(out)) == 3 and _rows(out)[0]["extra_info"]["source"] == "my/set"


def test_nt_source_needs_columns(tmp_path, capsys):
    assert nt.main(["--source", "my/set", "--output", str(tmp_path / "x.parquet")]) == 2
    assert "--problem-col" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input, every builder


BUILDERS = {
    "dapo": (dapo_math_17k.main, DAPO, []),
    "or1": (or1.main, OR1, []),
    "nt": (nt.main, FIXTURES / "nt" / "numina_tir.jsonl", []),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys, name):
    main, fixture, extra = BUILDERS[name]
    out = tmp_path / "out.parquet"
    out.write_bytes(b"old")
    assert main(["--input", str(fixture), "--output", str(out), *extra]) == 2
    assert f"output {out} already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"old"
    assert main(["--input", str(fixture), "--output", str(out), "--overwrite", *extra]) == 0
    assert len(pd.read_parquet(out)) > 0


def test_eval_sets_existing_output_refused(tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "gsm8k.parquet").write_bytes(b"old")
    assert eval_sets.main(["--input", str(EVAL), "--output", str(out)]) == 2
    assert "gsm8k.parquet already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["gsm8k.parquet"]  # checked before anything is written


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_missing_empty_and_unreadable_inputs(tmp_path, capsys, name):
    main, _, extra = BUILDERS[name]
    out = tmp_path / "out.parquet"
    missing = tmp_path / "nope.jsonl"
    assert main(["--input", str(missing), "--output", str(out), *extra]) == 2
    assert f"input file {missing} does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["--input", str(empty), "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and ("empty" in err or "could not be read" in err)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    assert main(["--input", str(garbage), "--output", str(out), *extra]) == 2
    assert f"input file {garbage} could not be read" in capsys.readouterr().err
    txt = tmp_path / "data.csv"
    txt.write_text("a,b\n1,2\n")
    assert main(["--input", str(txt), "--output", str(out), *extra]) == 2
    assert "unsupported format" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "main,frame,column",
    [
        (dapo_math_17k.main, {"prompt": ["x"]}, "reward_model"),
        (or1.main, {"reward_model": [{"ground_truth": "[]"}]}, "prompt"),
        (nt.main, {"problem": ["x"]}, "solution"),
    ],
)
def test_missing_column_is_named(tmp_path, capsys, main, frame, column):
    src = tmp_path / "in.jsonl"
    pd.DataFrame(frame).to_json(src, orient="records", lines=True)
    assert main(["--input", str(src), "--output", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert f"{src}: missing column(s) ['{column}']" in err


def test_eval_set_missing_column_and_file(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    pd.DataFrame({"question": ["q"], "solution": ["s"]}).to_json(src / "minerva.jsonl", orient="records", lines=True)
    assert eval_sets.main(["--input", str(src), "--output", str(tmp_path / "o"), "--sets", "minerva"]) == 2
    assert "minerva.jsonl: missing column(s) ['answer']" in capsys.readouterr().err
    assert eval_sets.main(["--input", str(src), "--output", str(tmp_path / "o"), "--sets", "gsm8k"]) == 2
    assert "no gsm8k.parquet, gsm8k.jsonl or gsm8k.json" in capsys.readouterr().err


def test_all_rows_dropped_writes_nothing(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    rows = [{"problem": "p", "answer": ""}, {"problem": "", "answer": "3"}]
    with open(src, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    out = tmp_path / "o.parquet"
    args = ["--preset", "deepscaler", "--input", str(src), "--output", str(out)]
    assert nt.main(args) == 2
    captured = capsys.readouterr()
    assert "no rows left to write" in captured.err
    assert "empty answer" in captured.out and "in.jsonl row 0" in captured.out
    assert "empty problem" in captured.out and "in.jsonl row 1" in captured.out
    assert not out.exists()


def test_limit_reads_first_rows(tmp_path, capsys):
    out = tmp_path / "o.parquet"
    assert dapo_math_17k.main(["--input", str(DAPO), "--output", str(out), "--limit", "2"]) == 0
    assert len(_rows(out)) == 2
    assert "rows read         2" in capsys.readouterr().out


def test_hub_failure_names_dataset(tmp_path, capsys, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert or1.main(["--output", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "hub:Skywork/Skywork-OR1-RL-Data:math" in err and "--input" in err


def test_jsonl_answers_stay_strings(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"x": "007"}\n{"x": "1e3"}\n')
    assert list(read_table(src)["x"]) == ["007", "1e3"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from data_prep import common

    def boom(self, path, **kwargs):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        common.write_parquet_atomic([{"a": 1}], tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []
