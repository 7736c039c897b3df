"""evaluate under a careless user's inputs (issue 25): nothing is deleted, no result silently changes,
a failed start leaves nothing that blocks the corrected rerun, every refusal is one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipe.depo.evaluate import cli
from recipe.depo.evaluate.backends import HFBackend
from recipe.depo.evaluate.model import MERGE_MARKER


def _args(model, data, out, *extra):
    return ["--model", str(model), "--data", str(data), "--output", str(out), "--n", "2",
            "--max-response-length", "8", "--batch-size", "4", "--backend", "hf", *extra]  # fmt: skip


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def verl_checkpoint(tiny_policy, make_verl_checkpoint, tmp_path_factory) -> Path:
    return make_verl_checkpoint(tiny_policy, tmp_path_factory.mktemp("ckpt") / "global_step_1")


def test_merged_dir_that_the_merger_did_not_make_is_refused_and_kept(verl_checkpoint, eval_dir, tmp_path, capsys):
    precious = tmp_path / "models"
    (precious / "mine").mkdir(parents=True)
    (precious / "mine" / "weights.bin").write_bytes(b"not yours")
    (precious / "notes.txt").write_text("keep me")
    before = _tree(precious)
    out = tmp_path / "out"
    assert cli.main(_args(verl_checkpoint, eval_dir, out, "--merged-dir", str(precious))) == 2
    _one_line_error(capsys, f"--merged-dir {precious}", "did not make")
    assert _tree(precious) == before
    assert not out.exists()  # a refused start writes nothing

    a_file = tmp_path / "model.txt"
    a_file.write_text("x")
    assert cli.main(_args(verl_checkpoint, eval_dir, out, "--merged-dir", str(a_file))) == 2
    _one_line_error(capsys, "a file, not a folder")
    assert a_file.read_text() == "x"


def test_a_folder_the_merger_made_is_reused_then_replaced_when_the_checkpoint_changes(
    verl_checkpoint, eval_dir, tmp_path
):
    merged = tmp_path / "merged"
    merged.mkdir()  # an empty folder may be used too
    assert cli.main(_args(verl_checkpoint, eval_dir, tmp_path / "a", "--merged-dir", str(merged), "--limit", "1")) == 0
    marker = json.loads((merged / MERGE_MARKER).read_text())
    assert (merged / "config.json").exists()
    # the shards changed (a new save into the same step folder): the merge redoes the folder it made
    shard = verl_checkpoint / "actor" / "model_world_size_1_rank_0.pt"
    os.utime(shard, ns=(time.time_ns(), time.time_ns()))
    assert cli.main(_args(verl_checkpoint, eval_dir, tmp_path / "b", "--merged-dir", str(merged), "--limit", "1")) == 0
    assert json.loads((merged / MERGE_MARKER).read_text()) != marker


@pytest.mark.parametrize("where", ["same", "parent"])
def test_merged_dir_that_is_or_holds_the_output_is_refused(where, verl_checkpoint, eval_dir, tmp_path, capsys):
    out = tmp_path / "runs" / "eval"
    assert cli.main(_args(verl_checkpoint, eval_dir, out, "--limit", "1")) == 0  # merged into out/merged_model
    results = {k: v for k, v in _tree(out).items() if not k.startswith("merged_model")}
    assert cli.CONFIG_FILE in results and "easy.jsonl" in results
    merged = out if where == "same" else out.parent
    capsys.readouterr()
    # the rest of the sets is still to do, so this run would merge (today it replaced the folder)
    assert cli.main(_args(verl_checkpoint, eval_dir, out, "--merged-dir", str(merged))) == 2
    _one_line_error(capsys, f"--merged-dir {merged} is (or contains) --output {out}")
    assert {k: v for k, v in _tree(out).items() if not k.startswith("merged_model")} == results


def test_a_limited_smoke_run_into_a_finished_folder_keeps_its_summary(tiny_policy, eval_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert cli.main(_args(tiny_policy, eval_dir, out)) == 0
    finished = json.loads((out / "summary.json").read_text())
    assert (finished["sets"]["easy"]["queries"], finished["sets"]["easy"]["total"]) == (6, 6)
    assert finished["partial"] is False

    monkeypatch.setattr(HFBackend, "__init__", lambda *a, **k: pytest.fail("model loaded for a finished folder"))
    # one set, one query: everything is already there; the summary still covers the whole folder
    assert cli.main(_args(tiny_policy, eval_dir / "easy.parquet", out, "--limit", "1")) == 0
    assert json.loads((out / "summary.json").read_text()) == finished


def test_a_limited_run_into_a_fresh_folder_says_its_summary_is_partial(tiny_policy, eval_dir, tmp_path):
    out = tmp_path / "out"
    assert cli.main(_args(tiny_policy, eval_dir, out, "--limit", "2")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True
    assert {s: (v["queries"], v["total"], v["partial"]) for s, v in summary["sets"].items()} == {
        "easy": (2, 6, True),
        "hard": (2, 5, True),
    }
    assert "| 2 of 6 (partial) |" in (out / "summary.md").read_text()
    # finishing it clears the mark
    assert cli.main(_args(tiny_policy, eval_dir, out)) == 0
    assert json.loads((out / "summary.json").read_text())["partial"] is False


_HOLD_LOCK = """
import sys, time
from recipe.depo.fsutil import try_lock_dir
assert try_lock_dir(sys.argv[1]) is not None
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_evaluate_on_a_busy_folder_is_refused_and_a_dead_holder_frees_it(
    tiny_policy, eval_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(_args(tiny_policy, eval_dir, out)) == 2
        _one_line_error(capsys, f"--output {out}: another evaluate is writing to this folder")
        assert list(out.iterdir()) == []
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel drops the lock
        holder.wait()
    assert cli.main(_args(tiny_policy, eval_dir, out)) == 0
    assert len((out / "easy.jsonl").read_text().splitlines()) == 6


def test_a_model_that_does_not_load_writes_nothing_and_the_corrected_rerun_works(
    tiny_policy, eval_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here; offline, transformers fails at once
    out = tmp_path / "runs" / "eval"
    assert cli.main(_args("nobody-here/no-such-model", eval_dir, out)) == 2
    _one_line_error(capsys, "--model nobody-here/no-such-model: the model did not load")
    assert not (tmp_path / "runs").exists()  # not even the folders it made
    assert cli.main(_args(tiny_policy, eval_dir, out)) == 0


@pytest.mark.parametrize("case", ["file", "under_a_file", "not_writable"])
def test_an_output_that_cannot_be_written_is_one_line(case, tiny_policy, eval_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(HFBackend, "__init__", lambda *a, **k: pytest.fail("model loaded despite bad --output"))
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_a_file": tmp_path / "f" / "eval", "not_writable": Path("/proc/depo-eval")}
    assert cli.main(_args(tiny_policy, eval_dir, out[case])) == 2
    message = {"file": "a file, not a folder", "under_a_file": "is not a directory", "not_writable": "cannot write"}
    _one_line_error(capsys, f"--output {out[case]}", message[case])
    assert (tmp_path / "f").read_text() == "x"


def test_results_without_settings_are_not_adopted(tiny_policy, eval_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_args(tiny_policy, eval_dir, out, "--limit", "1")) == 0
    (out / cli.CONFIG_FILE).unlink()
    capsys.readouterr()
    assert cli.main(_args(tiny_policy, eval_dir, out, "--n", "3")) == 2
    _one_line_error(capsys, "holds easy.jsonl but no eval_config.json")


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty_output", "--output is empty"),
        ("empty_data", "--data: an empty path"),
        ("tensor_parallel_0", "--tensor-parallel-size must be >= 1"),
        ("results_file_is_a_folder", "easy.jsonl: cannot read it (Is a directory)"),
        ("hand_edited_acc", "easy.jsonl line 1: 'acc' must be a number in [0, 1.0], got 'x'"),
        ("settings_file_is_a_folder", "eval_config.json is not a readable JSON file"),
        ("training_run_dir", "holds metrics.jsonl but no eval_config.json: not an evaluate folder"),
        ("a_merged_model_folder", "a merged model folder"),
    ],
)
def test_more_bad_inputs_are_one_line(case, message, tiny_policy, eval_dir, tmp_path, capsys, monkeypatch):
    """Found probing by hand (docs/bad_inputs.md): each was a traceback, or wrote where it should not."""
    out = tmp_path / "out"
    argv = _args(tiny_policy, eval_dir, out)
    if case == "empty_output":
        argv = _args(tiny_policy, eval_dir, "")  # Path("") is the current folder: it wrote there
    elif case == "empty_data":
        argv = _args(tiny_policy, "", out)
    elif case == "tensor_parallel_0":
        argv += ["--tensor-parallel-size", "0"]
    elif case in ("results_file_is_a_folder", "hand_edited_acc"):
        assert cli.main(_args(tiny_policy, eval_dir, out, "--limit", "1")) == 0
        capsys.readouterr()
        if case == "hand_edited_acc":
            text = (out / "easy.jsonl").read_text()
            (out / "easy.jsonl").write_text(text.replace('"acc": ', '"acc": "x", "was": ', 1))
        else:
            (out / "easy.jsonl").unlink()
            (out / "easy.jsonl").mkdir()
    elif case == "settings_file_is_a_folder":
        (out / cli.CONFIG_FILE).mkdir(parents=True)
    elif case == "a_merged_model_folder":
        out.mkdir()
        (out / MERGE_MARKER).write_text(json.dumps({"actor": "x", "shards": {}}))
    elif case == "training_run_dir":
        out.mkdir()
        (out / "metrics.jsonl").write_text('{"step": 1, "data": {}}\n')
    monkeypatch.setattr(HFBackend, "__init__", lambda *a, **k: pytest.fail("model loaded despite bad input"))
    assert cli.main(argv) == 2
    _one_line_error(capsys, message)
