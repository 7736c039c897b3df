"""examples/python_env.sh: the README's install into a distribution's Python (PEP 668).

A fake interpreter (a shell script answering the probe with a prefix of our choosing) stands in
for the distribution's Python where the detection alone is tested; the venv itself is created from
a real externally managed Python where the machine has one (Debian's /usr/bin/python3 here).
"""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPERS = os.path.join(REPO, "examples", "python_env.sh")


def _bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {HELPERS}; {script}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fake_python(tmp_path, in_venv: bool, marker: bool) -> str:
    """An interpreter whose stdlib is tmp_path/lib (with an EXTERNALLY-MANAGED file or not); it
    answers the probe itself and hands anything else to the real interpreter."""
    stdlib = tmp_path / "lib"
    stdlib.mkdir()
    if marker:
        (stdlib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use apt\n")
    fake = tmp_path / "python3"
    fake.write_text(
        textwrap.dedent(f"""\
            #!/usr/bin/env bash
            if [[ "$1" == -c && "$2" == *sysconfig* ]]; then echo {int(in_venv)}; echo {stdlib}; exit 0; fi
            exec {sys.executable} "$@"
            """)
    )
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize(
    ("in_venv", "marker", "managed"),
    [(False, True, True), (False, False, False), (True, True, False)],
    ids=["distribution-python", "no-marker", "inside-a-venv"],
)
def test_detection(tmp_path, in_venv, marker, managed):
    python = _fake_python(tmp_path, in_venv, marker)
    assert _bash(f"depo_externally_managed {python}").returncode == (0 if managed else 1)


def test_an_unrunnable_python_is_an_error_naming_it(tmp_path):
    result = _bash(f"depo_install_python {tmp_path}/nope {tmp_path}/.venv")
    assert result.returncode == 2 and f"cannot run '{tmp_path}/nope'" in result.stderr


def test_a_python_that_is_not_externally_managed_is_used_as_it_is(tmp_path):
    # the CI path: a pyenv (or any venv's) python installs into itself, no venv is made
    result = _bash(f"depo_install_python {sys.executable} {tmp_path}/.venv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable
    assert not (tmp_path / ".venv").exists()
    assert _bash(f"depo_installed_venv {tmp_path}/.venv").returncode != 0


def test_a_fake_distribution_python_gets_a_venv(tmp_path):
    python = _fake_python(tmp_path, in_venv=False, marker=True)
    venv = tmp_path / ".venv"
    result = _bash(f"depo_install_python {python} {venv}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{venv}/bin/python"
    assert "externally managed (PEP 668)" in result.stderr
    assert _bash(f"depo_installed_venv {venv}").stdout.strip() == str(venv)
    # a second install reuses it
    again = _bash(f"depo_install_python {python} {venv}")
    assert again.stdout.strip() == f"{venv}/bin/python" and "installing into" not in again.stderr


DEBIAN_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(
    not os.path.exists(DEBIAN_PYTHON) or _bash(f"depo_externally_managed {DEBIAN_PYTHON}").returncode != 0,
    reason="no externally managed distribution Python on this machine",
)
def test_the_distribution_python_gets_a_venv_pip_can_install_into(tmp_path):
    venv = tmp_path / ".venv"
    result = _bash(f"depo_install_python {DEBIAN_PYTHON} {venv}")
    assert result.returncode == 0, result.stderr
    python = result.stdout.strip()
    assert python == f"{venv}/bin/python"
    assert _bash(f"depo_externally_managed {python}").returncode == 1  # pip may install here
    pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0 and str(venv) in pip.stdout


def test_the_demo_runs_from_the_venv_the_install_made(tmp_path):
    """run_depo_cpu.sh puts the venv install_cpu.sh marked as its own first on PATH: its first
    python call (the data step) reaches that venv's python, here a stub that says so and stops."""
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "python"
    stub.write_text('#!/usr/bin/env bash\necho "venv python: $*"\nexit 3\n')
    stub.chmod(0o755)
    assert _bash(f"depo_installed_venv {venv}").returncode != 0  # not made by the install: ignored
    (venv / ".depo-cpu-install").touch()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(DEPO_VENV=str(venv), OUT_DIR=str(tmp_path / "run"), REPORT="0")
    run = subprocess.run(
        ["bash", os.path.join(REPO, "examples", "run_depo_cpu.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 3, run.stdout + run.stderr
    assert "venv python: -m data_prep.arithmetic" in run.stdout
