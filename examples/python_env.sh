# Sourced by install_cpu.sh and run_depo_cpu.sh: which Python the CPU install goes into.
#
# A distribution's own Python (Debian 12+, Ubuntu 23.04+: PEP 668, "externally managed") refuses
# `pip install` outside a virtual environment, so the README's first command would fail there at
# once. For such a Python the install goes into a venv in the checkout (DEPO_VENV, default
# <checkout>/.venv) and the demo runs from it; any other Python (pyenv, conda, an active venv, CI)
# is used as it is.

# 0 when "$1" is an externally managed Python outside any venv (PEP 668: an EXTERNALLY-MANAGED
# file in its stdlib directory, and sys.prefix == sys.base_prefix).
depo_externally_managed() {
  local probe
  probe=$("$1" -c 'import sys, sysconfig; print(int(sys.prefix != sys.base_prefix)); print(sysconfig.get_path("stdlib"))') \
    || { echo "python_env.sh: cannot run '$1'" >&2; return 2; }
  [[ "$(sed -n 1p <<<"$probe")" == 0 && -f "$(sed -n 2p <<<"$probe")/EXTERNALLY-MANAGED" ]]
}

# Prints the Python to install into: "$1" itself, or the python of the venv "$2" (created from
# "$1" when missing, and marked as ours for run_depo_cpu.sh) when "$1" is externally managed.
depo_install_python() {
  local python=$1 venv=$2 status=0
  depo_externally_managed "$python" || status=$?
  if [[ $status == 2 ]]; then return 2; fi
  if [[ $status != 0 ]]; then echo "$python"; return 0; fi
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "$python is externally managed (PEP 668): installing into a virtual environment at $venv" >&2
    "$python" -m venv "$venv" >&2 || {
      echo "could not create $venv; on Debian/Ubuntu: sudo apt install python3-venv, then re-run" >&2
      return 2
    }
  fi
  touch "$venv/.depo-cpu-install"
  echo "$venv/bin/python"
}

# The venv install_cpu.sh made, if it made one (prints its directory), for the demo to run in.
depo_installed_venv() {
  [[ -x "$1/bin/python" && -f "$1/.depo-cpu-install" ]] && echo "$1"
}
