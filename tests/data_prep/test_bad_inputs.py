"""Issue #13's data-prep cases: permissions, values written silently, tracebacks instead of one
`error:` line, half-published eval sets, temporaries left by a killed build."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from data_prep import arithmetic, dapo_math_17k, eval_sets, nt, or1
from data_prep.common import DataPrepError, make_row, publish_parquets, remove_stale_temps

FIXTURES = Path(__file__).parent / "fixtures"
DAPO = FIXTURES / "dapo_math_17k.jsonl"
OR1 = FIXTURES / "or1_math.parquet"
EVAL = FIXTURES / "eval"
REPO = Path(__file__).resolve().parents[2]


def _dapo_rows():
    return [json.loads(line) for line in DAPO.read_text().splitlines()]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _or1_frame():
    return pd.read_parquet(OR1)


def _only_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


# ---------------------------------------------------------------- 7: file mode from the umask


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_umask_mode(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        out = tmp_path / "dapo.parquet"
        assert dapo_math_17k.main(["--input", str(DAPO), "--output", str(out)]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == mode
        assert arithmetic.main(["--output", str(tmp_path / "arith"), "--train-size", "4", "--val-size", "2"]) == 0
        assert stat.S_IMODE((tmp_path / "arith" / "val.parquet").stat().st_mode) == mode
    finally:
        os.umask(previous)


# ---------------------------------------------------------------- 8: values written silently


def test_dapo_list_or_mapping_ground_truth_is_an_error_naming_the_row(tmp_path, capsys):
    for bad in (["1", "2"], {"a": 1}):
        rows = _dapo_rows()
        rows[1]["reward_model"]["ground_truth"] = bad
        src = _write_jsonl(tmp_path / "in.jsonl", rows)
        out = tmp_path / "o.parquet"
        assert dapo_math_17k.main(["--input", str(src), "--output", str(out)]) == 2
        line = _only_error_line(capsys)
        assert f"{src} row 1: reward_model.ground_truth is a" in line and "expected text" in line
        assert not out.exists()


def test_or1_json_object_or_nested_answers_are_dropped_not_stringified(tmp_path, capsys):
    frame = _or1_frame()
    frame.at[0, "reward_model"] = {"ground_truth": '{"a": 1}', "style": "rule"}
    frame.at[1, "reward_model"] = {"ground_truth": '["4", ["4"]]', "style": "rule"}
    frame.at[2, "reward_model"] = {"ground_truth": '["17", null]', "style": "rule"}
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    out = tmp_path / "o.parquet"
    assert or1.main(["--input", str(src), "--output", str(out), "--no-difficulty-filter"]) == 0
    truths = [r["ground_truth"] for r in pd.read_parquet(out)["reward_model"]]
    assert truths == ["\\pi", "\\frac{5}{6}", "81"]  # rows 0-2 dropped; before, "{'a': 1}" was one
    printed = capsys.readouterr().out
    assert "ground_truth is not a JSON list of answers" in printed
    assert "in.parquet row 0" in printed and "in.parquet row 1" in printed
    assert or1.decode_answers("[7, 2.5]") == ["7", "2.5"]
    assert or1.decode_answers('{"a": 1}') is None and or1.decode_answers("[true]") is None


@pytest.mark.parametrize("value", [8.7, "eight", True])
def test_or1_fractional_or_text_difficulty_is_an_error(tmp_path, capsys, value):
    frame = _or1_frame()
    frame["extra_info"] = frame["extra_info"].astype(object)
    info = dict(frame.at[1, "extra_info"])
    info["model_difficulty"] = {**info["model_difficulty"], "DeepSeek-R1-Distill-Qwen-7B": value}
    src = tmp_path / "in.jsonl"
    rows = frame.to_dict("records")
    rows[1]["extra_info"] = info
    for row in rows:
        row["prompt"] = list(row["prompt"])
    _write_jsonl(src, rows)
    assert or1.main(["--input", str(src), "--output", str(tmp_path / "o.parquet")]) == 2
    line = _only_error_line(capsys)
    assert f"{src} row 1: extra_info.model_difficulty['DeepSeek-R1-Distill-Qwen-7B'] is {value!r}" in line


def test_output_with_a_trailing_slash_is_refused(tmp_path, capsys):
    out = f"{tmp_path}/slash/"
    assert dapo_math_17k.main(["--input", str(DAPO), "--output", out]) == 2
    assert f"output {out} is a directory" in _only_error_line(capsys)
    assert not (tmp_path / "slash").exists()


def test_builders_refuse_to_write_a_reference_the_reward_cannot_match():
    for bad in ("", "  ", "nan", None, ["1"], 3):
        with pytest.raises(DataPrepError, match="ground_truth"):
            make_row(data_source="math500", prompt_text="p", question="q", ground_truth=bad, index=0, split="test")


def test_eval_set_answer_that_is_a_mapping_is_an_error(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rows = [{"question": "q1", "answer": "3"}, {"question": "q2", "answer": {"value": 4}}]
    _write_jsonl(src / "minerva.jsonl", rows)
    assert eval_sets.main(["--input", str(src), "--output", str(tmp_path / "o"), "--sets", "minerva"]) == 2
    assert "minerva.jsonl row 1: answer is a dict" in _only_error_line(capsys)


# ---------------------------------------------------------------- 9: one line, exit 2, never a traceback


def test_dapo_extra_info_that_is_a_string(tmp_path, capsys):
    rows = _dapo_rows()
    rows[2]["extra_info"] = "index 7"
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    assert dapo_math_17k.main(["--input", str(src), "--output", str(tmp_path / "o.parquet")]) == 2
    assert f"{src} row 2: extra_info is a str ('index 7'), expected a mapping" in _only_error_line(capsys)


def test_or1_text_index_is_kept_as_text(tmp_path):
    frame = _or1_frame()
    rows = frame.to_dict("records")
    for i, row in enumerate(rows):
        row["prompt"] = list(row["prompt"])
        row["extra_info"] = {**row["extra_info"], "index": f"q-{i}"}
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "o.parquet"
    assert or1.main(["--input", str(src), "--output", str(out)]) == 0
    assert [e["source_index"] for e in pd.read_parquet(out)["extra_info"]] == ["q-0", "q-1", "q-7"]


def test_existing_directory_as_output_even_with_overwrite(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for builder, extra in ((dapo_math_17k.main, ["--input", str(DAPO)]), (or1.main, ["--input", str(OR1)])):
        assert builder([*extra, "--output", str(out), "--overwrite"]) == 2
        assert f"output {out} is a directory" in _only_error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_arithmetic_bad_outputs_and_sizes(tmp_path, capsys):
    as_file = tmp_path / "file"
    as_file.write_text("x")
    assert arithmetic.main(["--output", str(as_file)]) == 2
    assert f"--output {as_file} is a file" in _only_error_line(capsys)
    assert arithmetic.main(["--output", str(tmp_path / "a"), "--train-size", "0"]) == 2
    assert "--train-size must be a positive integer, got 0" in _only_error_line(capsys)
    assert arithmetic.main(["--output", str(tmp_path / "a"), "--val-size", "-3"]) == 2
    assert "--val-size must be a positive integer, got -3" in _only_error_line(capsys)
    assert not (tmp_path / "a").exists()


def _run_without_write_permission(args):
    """Run a builder CLI as a process that cannot write where permission bits forbid it. Root
    ignores permission bits, so as root the capabilities that let it are dropped."""
    command = [sys.executable, "-m", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_read_only_output_directory_is_refused_before_reading_anything(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        # the input does not exist: an error about it would mean the build was attempted first
        result = _run_without_write_permission(
            ["data_prep.dapo_math_17k", "--input", str(tmp_path / "missing.jsonl"), "--output", f"{locked}/o.parquet"]
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: output {locked}/o.parquet: cannot write to {locked} (Permission denied)"
        ]
        result = _run_without_write_permission(
            ["data_prep.eval_sets", "--input", str(EVAL), "--output", f"{locked}/eval", "--sets", "amc23"]
        )
        assert result.returncode == 2 and "cannot write to" in result.stderr and "Traceback" not in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------- 10: eval sets all or nothing


def test_eval_sets_publish_all_or_nothing(tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(EVAL, src)
    good_math500 = (src / "math500.jsonl").read_text()
    (src / "math500.jsonl").write_text(good_math500.replace('"answer"', '"final"'))
    out = tmp_path / "eval"
    assert eval_sets.main(["--input", str(src), "--output", str(out)]) == 2
    assert "math500.jsonl: missing column(s) ['answer']" in _only_error_line(capsys)
    assert not out.exists() or list(out.iterdir()) == []  # gsm8k was built first, and not written
    (src / "math500.jsonl").write_text(good_math500)
    assert eval_sets.main(["--input", str(src), "--output", str(out)]) == 0  # no --overwrite needed
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in eval_sets.EVAL_SETS)


def test_publish_is_all_or_nothing_when_a_write_fails(tmp_path, monkeypatch):
    original = pd.DataFrame.to_parquet
    calls = []

    def fail_second(self, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(self, path, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail_second)
    with pytest.raises(DataPrepError, match=r"cannot write .*b\.parquet: No space left on device"):
        publish_parquets({tmp_path / "a.parquet": [{"x": 1}], tmp_path / "b.parquet": [{"x": 2}]})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 11: temporaries of a killed build


def test_temporaries_of_a_killed_build_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "nt.parquet"
    killer = (
        "import os, signal, pandas as pd\n"
        "def die(self, path, **kw):\n"
        "    open(path, 'wb').write(b'PAR1 half a file')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "pd.DataFrame.to_parquet = die\n"
        "from data_prep import nt\n"
        f"nt.main(['--input', {str(FIXTURES / 'nt' / 'numina_tir.jsonl')!r}, '--output', {str(out)!r}])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    killed = subprocess.run([sys.executable, "-c", killer], capture_output=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".nt.parquet.") and left[0].endswith(".tmp"), left
    legacy = tmp_path / ".nt.parquet.k3j4h5g6.tmp"  # the shape earlier versions left behind
    legacy.write_bytes(b"old")
    busy = tmp_path / f".nt.parquet.{os.uname().nodename}.{os.getpid()}.abcd1234.tmp"  # a live writer's
    busy.write_bytes(b"in progress")

    assert nt.main(["--input", str(FIXTURES / "nt" / "numina_tir.jsonl"), "--output", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, busy.name])
    assert remove_stale_temps(out) == []  # the live one stays until its writer is gone


# ---------------------------------------------------------------- issue 25's probing


def test_dapo_val_output_without_val_size_is_refused_not_ignored(tmp_path, capsys):
    argv = ["--input", str(DAPO), "--output", str(tmp_path / "t.parquet"), "--val-output", str(tmp_path / "v.parquet")]
    assert dapo_math_17k.main(argv) == 2
    assert "--val-output needs --val-size" in _only_error_line(capsys)
    assert not (tmp_path / "t.parquet").exists()


def test_a_jsonl_or_json_that_starts_with_a_byte_order_mark_is_read(tmp_path):
    for suffix, text in ((".jsonl", DAPO.read_text()), (".json", json.dumps(_dapo_rows()))):
        src = tmp_path / f"bom{suffix}"
        src.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert dapo_math_17k.main(["--input", str(src), "--output", str(tmp_path / f"o{suffix}.parquet")]) == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--difficulty-col", "level", "--difficulty-min", "nan"], "--difficulty-min nan: must be a finite number"),
        (["--difficulty-col", "level", "--difficulty-max", "inf"], "--difficulty-max inf: must be a finite number"),
        (["--difficulty-max", "3"], "--difficulty-max needs --difficulty-col"),
    ],
)
def test_nt_difficulty_bounds_that_would_filter_nothing_are_refused(tmp_path, capsys, flags, message):
    out = tmp_path / "o.parquet"
    assert nt.main(["--input", str(FIXTURES / "nt" / "numina_tir.jsonl"), "--output", str(out), *flags]) == 2
    assert message in _only_error_line(capsys)
    assert not out.exists()


def _arith(out, *extra):
    return arithmetic.main(["--output", str(out), "--train-size", "12", "--val-size", "6", "--seed", "3", *extra])


def _contents(out):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.iterdir())}


def test_arithmetic_reuse_keeps_the_same_data_and_refuses_other_data_naming_it(tmp_path, capsys):
    """The CPU demo reuses DATA_DIR across runs: data built for other knobs (a size, the seed, the
    tier mix) must be refused, not trained on silently, and nothing in it rewritten."""
    out = tmp_path / "arith"
    assert _arith(out, "--reuse") == 0  # absent: built
    assert "reused" not in capsys.readouterr().out
    built = _contents(out)
    assert _arith(out, "--reuse") == 0
    assert capsys.readouterr().out.count("(reused: built with these settings)") == 2
    assert _contents(out) == built
    settings = "--train-size 12 --val-size 6 --seed 3 --tier-mix one of each"
    cases = [
        (["--train-size", "13"], f"{out / 'train.parquet'} has 12 rows where these settings give 13"),
        (["--val-size", "7"], f"{out / 'val.parquet'} has 6 rows where these settings give 7"),
        (["--seed", "4"], f"{out / 'train.parquet'} holds other problems, not the arithmetic data of --train-size 12"),
        (["--tier-mix", "3,3,3,1,1,1"], f"{out / 'train.parquet'} holds other problems"),
    ]
    for extra, message in cases:
        assert _arith(out, *extra, "--reuse") == 2
        line = _only_error_line(capsys)
        assert message in line and line.endswith("; remove it or write elsewhere"), line
    assert settings.replace("--seed 3", "--seed 4") in arithmetic_error(out, "--seed", "4", capsys=capsys)
    assert _contents(out) == built


def arithmetic_error(out, *extra, capsys):
    assert _arith(out, *extra, "--reuse") == 2
    return _only_error_line(capsys)


def test_arithmetic_reuse_refuses_a_lone_or_unreadable_split_and_excludes_overwrite(tmp_path, capsys):
    out = tmp_path / "arith"
    assert _arith(out) == 0
    (out / "val.parquet").unlink()
    assert "val.parquet is missing while the other split is there" in arithmetic_error(out, capsys=capsys)
    assert not (out / "val.parquet").exists()
    (out / "val.parquet").write_bytes(b"not parquet")
    assert "val.parquet cannot be read as parquet (" in arithmetic_error(out, capsys=capsys)
    assert (out / "val.parquet").read_bytes() == b"not parquet"
    with pytest.raises(SystemExit) as stop:
        _arith(out, "--reuse", "--overwrite")
    assert stop.value.code == 2 and "--reuse and --overwrite exclude each other" in capsys.readouterr().err
