"""``python -m recipe.depo.router serve``: settings (defaults < YAML < flags), errors that name the
setting, and one real start of the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from router_helpers import EASY, HARD, chat, fetch

from recipe.depo.router.serve import main
from recipe.depo.router.serve_config import API_KEY_ENV, ConfigError, ServeConfig

REPO = Path(__file__).resolve().parents[2]


def test_urls_are_normalised_to_the_server_root():
    config = ServeConfig(estimator="e", small="http://h:8001/v1/", large="https://h.example/llm/v1")
    assert (config.small, config.large) == ("http://h:8001", "https://h.example/llm")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"small": "h:1", "large": "http://h:2"}, "small: must be an http"),
        ({"small": "http://h:x", "large": "http://h:2"}, "small: bad port"),
        ({"large": "http://h:2"}, "small: the small backend's URL is required"),
        ({"small": "http://h:1", "large": "http://h:2", "threshold": 1.5}, "threshold: must lie in"),
        ({"small": "http://h:1", "large": "http://h:2", "backend_timeout": 0}, "backend_timeout"),
        ({"small": "http://h:1", "large": "http://h:2", "max_batch_size": 0}, "max_batch_size"),
        ({"small": "http://h:1", "large": "http://h:2", "dry_run": "yes"}, "dry_run: must be true or false"),
    ],
)
def test_bad_settings_name_the_setting(values, message):
    with pytest.raises(ConfigError, match=message):
        ServeConfig(estimator="e", **values)


def test_yaml_then_flags_then_env_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    file_values = {"estimator": "e", "small": "http://a:1", "large": "http://b:2", "threshold": 0.3}
    config = ServeConfig.build(file_values, {"threshold": 0.6, "port": None}, source="r.yaml")
    assert (config.threshold, config.port, config.api_key) == (0.6, 8000, "from-env")
    assert ServeConfig.build(file_values, {"api_key": "flag"}).api_key == "flag"
    assert ServeConfig(estimator="e", dry_run=True).binds_loopback
    assert not ServeConfig(estimator="e", dry_run=True, host="0.0.0.0").binds_loopback


def test_cli_errors_are_one_line_naming_file_and_key(tmp_path, capsys):
    config = tmp_path / "router.yaml"
    config.write_text("estimator: e\nsmall: http://a:1\nlarge: http://b:2\nthreshhold: 0.5\n")
    assert main(["--config", str(config)]) == 2
    assert f"{config}: unknown key 'threshhold'" in capsys.readouterr().err
    config.write_text("estimator: e\nsmall: http://a:1\nlarge: http://b:2\nthreshold: 2\n")
    assert main(["--config", str(config)]) == 2
    assert f"{config}: threshold: must lie in [0.0, 1.0], got 2" in capsys.readouterr().err
    assert main(["--estimator", str(tmp_path), "--small", "http://a:1", "--large", "http://b:2"]) == 2
    assert "no config.json; expected a directory written by OnlineEstimator.save" in capsys.readouterr().err


def test_cli_serves_from_a_yaml_config(estimator_checkpoint, backends, tmp_path):
    """The real command in a subprocess: dispatch from ``python -m recipe.depo.router``, YAML, a
    free port, routing both ways, and a graceful stop on SIGTERM."""
    config = tmp_path / "router.yaml"
    config.write_text(
        f"estimator: {estimator_checkpoint}\nsmall: {backends['small_url']}/v1\nlarge: {backends['large_url']}\n"
        "threshold: 0.9\nlog_level: warning\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "recipe.depo.router", "serve", "--config", str(config), "--port", "0"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "listening on" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the router did not start in 120 s"
        url = line.split("listening on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        routes = [
            fetch("POST", f"{url}/v1/chat/completions", body=chat(t))[1]["X-DEPO-Route"] for t in (EASY[0], HARD[0])
        ]
        assert routes == ["small", "large"]
        assert json.loads(fetch("GET", f"{url}/health")[2])["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    # uvicorn shuts down gracefully, then re-raises the signal it caught, so the exit is by SIGTERM.
    assert proc.returncode == -signal.SIGTERM
    assert "Traceback" not in stderr, stderr


def _damaged_copy(checkpoint: str, tmp_path: Path, damage: str) -> Path:
    import shutil

    copy = tmp_path / f"ckpt-{damage}"
    shutil.copytree(checkpoint, copy)
    if damage == "truncated_heads":
        data = (copy / "heads.pt").read_bytes()
        (copy / "heads.pt").write_bytes(data[: len(data) // 2])
    elif damage == "no_backbone":
        shutil.rmtree(copy / "backbone")
    elif damage == "empty_backbone":
        shutil.rmtree(copy / "backbone")
        (copy / "backbone").mkdir()
    elif damage == "no_optimizer":
        (copy / "optimizer.pt").unlink()
    return copy


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated_heads", "heads.pt: not a complete torch file"),
        ("no_backbone", ": no backbone/"),
        ("empty_backbone", ": no backbone/"),
        ("no_optimizer", ": no optimizer.pt"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_naming_the_file(estimator_checkpoint, tmp_path, capsys, damage, message):
    copy = _damaged_copy(estimator_checkpoint, tmp_path, damage)
    assert main(["--estimator", str(copy), "--dry-run", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"depo-router: estimator: {copy}") and message in err, err


@pytest.mark.parametrize(
    "argv", [["--threshold", "1.5"], ["--port", "99999"], ["--config", "/nonexistent.yaml"], ["--small", "h:1"]]
)
def test_a_bad_setting_is_refused_before_torch_or_verl_is_imported(argv):
    """The settings are checked in about a second: verl (torch, tensordict: ~6 s here, far more on
    a busy machine) is imported only to load the estimator."""
    probe = (
        "import sys\n"
        "from recipe.depo.router.__main__ import main\n"
        f"code = main(['serve', '--estimator', 'e', '--large', 'http://h:2', *{argv!r}])\n"
        "print('code', code, 'heavy:', sorted(m for m in ('torch', 'verl', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert "code 2 heavy: []" in out.stdout, out.stdout + out.stderr[-2000:]


@pytest.fixture
def estimator_never_loads(monkeypatch):
    import recipe.depo.router.serve as serve

    monkeypatch.setattr(serve, "load_estimator", lambda *a, **k: pytest.fail("loaded the estimator first"))


@pytest.mark.parametrize("where", ["directory", "missing_folder"])
def test_a_route_log_that_cannot_be_opened_is_refused_before_the_estimator_loads(
    tmp_path, capsys, estimator_never_loads, where
):
    path = tmp_path if where == "directory" else tmp_path / "no" / "routes.jsonl"
    assert main(["--estimator", "e", "--dry-run", "--port", "0", "--route-log", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"depo-router: route_log: cannot open {path}: ") and len(err.strip().splitlines()) == 1


def test_a_port_in_use_is_refused_before_the_estimator_loads(capsys, estimator_never_loads):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["--estimator", "e", "--dry-run", "--port", str(port)]) == 2
    assert f"depo-router: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
