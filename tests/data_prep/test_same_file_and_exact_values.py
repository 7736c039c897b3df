"""Issue #25's data-prep cases: two outputs (or an output and an input) that are one file are
refused before any work, however the path is spelled; answers keep their exact value."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from data_prep import arithmetic, dapo_math_17k, eval_sets, nt, or1, polaris_filter
from data_prep.common import DataPrepError, make_row, publish_parquets, read_table

FIXTURES = Path(__file__).parent / "fixtures"
DAPO = FIXTURES / "dapo_math_17k.jsonl"
OR1 = FIXTURES / "or1_math.parquet"
EVAL = FIXTURES / "eval"


def _only_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def _spellings(tmp_path: Path) -> list[tuple[str, str]]:
    """(first, second) spellings of one file: identical, ./X, dir/../X, a symlink to X."""
    (tmp_path / "sub").mkdir(exist_ok=True)
    link = tmp_path / "link.parquet"
    if not link.is_symlink():
        link.symlink_to(tmp_path / "x.parquet")
    return [
        ("x.parquet", "x.parquet"),
        ("x.parquet", "./x.parquet"),
        (str(tmp_path / "x.parquet"), "sub/../x.parquet"),
        ("x.parquet", "link.parquet"),
    ]


@pytest.mark.parametrize("case", range(4))
def test_dapo_val_output_that_is_the_output_is_refused_before_reading(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    first, second = _spellings(tmp_path)[case]
    argv = ["--input", str(DAPO), "--output", first, "--val-size", "2", "--val-output", second]
    assert dapo_math_17k.main(argv) == 2
    line = _only_error_line(capsys)
    assert "--output" in line and "--val-output" in line and "same file" in line, line
    assert not (tmp_path / "x.parquet").exists()


def test_dapo_same_file_is_refused_even_with_overwrite_and_the_file_is_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dapo_math_17k.main(["--input", str(DAPO), "--output", "x.parquet"]) == 0
    before = (tmp_path / "x.parquet").read_bytes()
    capsys.readouterr()
    argv = ["--input", str(DAPO), "--output", "x.parquet", "--val-size", "2", "--val-output", "./x.parquet"]
    assert dapo_math_17k.main([*argv, "--overwrite"]) == 2
    assert "same file" in _only_error_line(capsys)
    assert (tmp_path / "x.parquet").read_bytes() == before


def test_a_hard_link_is_the_same_file(tmp_path, capsys):
    out = tmp_path / "x.parquet"
    assert dapo_math_17k.main(["--input", str(DAPO), "--output", str(out)]) == 0
    os.link(out, tmp_path / "hard.parquet")
    hard = str(tmp_path / "hard.parquet")
    argv = ["--input", str(DAPO), "--output", str(out), "--val-size", "2", "--val-output", hard]
    assert dapo_math_17k.main([*argv, "--overwrite"]) == 2
    assert "same file" in _only_error_line(capsys)


@pytest.mark.parametrize("builder", ["dapo", "or1", "nt"])
def test_an_output_that_is_the_input_is_refused_even_with_overwrite(tmp_path, capsys, builder):
    source = {"dapo": DAPO, "or1": OR1, "nt": FIXTURES / "nt" / "numina_tir.jsonl"}[builder]
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes())
    main = {"dapo": dapo_math_17k.main, "or1": or1.main, "nt": nt.main}[builder]
    assert main(["--input", str(copy), "--output", str(tmp_path / "." / copy.name), "--overwrite"]) == 2
    line = _only_error_line(capsys)
    assert "--output" in line and "--input" in line, line
    assert copy.read_bytes() == source.read_bytes()


def test_polaris_all_output_that_is_the_output_is_refused_before_sampling(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [make_row(data_source="arithmetic", prompt_text="1+1", question="1+1", ground_truth="2", index=0, split="t")]
    publish_parquets({tmp_path / "train.parquet": rows})
    argv = ["--input", "train.parquet", "--output", "k.parquet", "--all-output", "./k.parquet"]
    assert polaris_filter.main([*argv, "--model", "none", "--work-dir", "w"]) == 2
    assert "same file" in _only_error_line(capsys)
    assert not (tmp_path / "w").exists()


def test_eval_sets_output_directory_that_is_the_input_directory_is_refused(tmp_path, capsys):
    local = tmp_path / "eval"
    local.mkdir()
    (local / "amc23.parquet").write_bytes((EVAL / "amc23.parquet").read_bytes())
    argv = ["--input", str(local), "--output", str(tmp_path / "." / "eval"), "--sets", "amc23", "--overwrite"]
    assert eval_sets.main(argv) == 2
    assert "--input amc23" in _only_error_line(capsys)
    assert (local / "amc23.parquet").read_bytes() == (EVAL / "amc23.parquet").read_bytes()


def test_arithmetic_split_files_that_are_one_file_are_refused(tmp_path, capsys):
    out = tmp_path / "arith"
    out.mkdir()
    (out / "val.parquet").symlink_to(out / "train.parquet")
    assert arithmetic.main(["--output", str(out), "--train-size", "4", "--val-size", "2"]) == 2
    assert "same file" in _only_error_line(capsys)


def test_the_shared_writer_refuses_two_spellings_of_one_target(tmp_path):
    row = make_row(data_source="arithmetic", prompt_text="q", question="q", ground_truth="1", index=0, split="t")
    with pytest.raises(DataPrepError, match="same file"):
        publish_parquets({tmp_path / "a.parquet": [row], f"{tmp_path}/./a.parquet": [row]})
    assert not (tmp_path / "a.parquet").exists()


def test_distinct_outputs_pass(tmp_path):
    from data_prep.common import check_outputs

    checked = check_outputs({"--output": tmp_path / "a.parquet", "--val-output": tmp_path / "b.parquet"}, False)
    assert set(checked) == {"--output", "--val-output"}
    assert check_outputs({"--output": tmp_path / "a.parquet", "--val-output": None}, False).keys() == {"--output"}


# ---------------------------------------------------------------- 8: answers keep their value


def test_jsonl_numbers_keep_their_exact_value(tmp_path):
    rows = [
        {"a": 1 / 3, "b": 12345678901234567890, "c": "007"},
        {"a": 1, "b": None, "c": "x"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = read_table(path)
    assert frame.at[0, "a"] == 1 / 3 and frame.at[1, "a"] == 1 and isinstance(frame.at[1, "a"], int)
    assert frame.at[0, "b"] == 12345678901234567890 and frame.at[0, "c"] == "007"


def test_dapo_float_and_big_integer_answers_are_written_exactly(tmp_path):
    rows = [json.loads(line) for line in DAPO.read_text().splitlines()]
    rows[0]["reward_model"]["ground_truth"] = 1 / 3
    rows[1]["reward_model"]["ground_truth"] = 12345678901234567890
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.parquet"
    assert dapo_math_17k.main(["--input", str(src), "--output", str(out)]) == 0
    truths = [r["ground_truth"] for r in pd.read_parquet(out)["reward_model"]]
    assert truths[:2] == ["0.3333333333333333", "12345678901234567890"]


def test_json_array_input_keeps_exact_values(tmp_path):
    rows = [json.loads(line) for line in DAPO.read_text().splitlines()]
    rows[0]["reward_model"]["ground_truth"] = 2 / 3
    src = tmp_path / "in.json"
    src.write_text(json.dumps(rows))
    out = tmp_path / "o.parquet"
    assert dapo_math_17k.main(["--input", str(src), "--output", str(out)]) == 0
    assert pd.read_parquet(out)["reward_model"][0]["ground_truth"] == repr(2 / 3)


def test_a_jsonl_line_that_is_not_json_is_named(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(DAPO.read_text().splitlines()[0] + "\n{not json\n")
    assert dapo_math_17k.main(["--input", str(src), "--output", str(tmp_path / "o.parquet")]) == 2
    assert f"{src} line 2 is not JSON" in _only_error_line(capsys)
