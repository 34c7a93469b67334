#!/usr/bin/env bash
# Set-up and the two everyday commands, on a fresh machine or an existing checkout:
#   ./dev.sh quickstart   venv + install, then the main job on synthetic TextZoom-format data (CPU)
#   ./dev.sh test         venv + install, ruff (lint + format check), mypy (strict on tsrx/),
#                         then the whole test suite
#                         (Slurm tests start a real Slurm)
# The venv lives in .venv (override with TSRX_VENV). CPU installs pin the torch CPU wheel
# (2.13.0) so that no multi-GB CUDA build is downloaded; GPU users install their own torch
# into the venv first and it is kept.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${TSRX_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_CPU_VERSION=2.13.0

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    if ! python -c "import torch" 2>/dev/null; then
        python -m pip install -q "torch==${TORCH_CPU_VERSION}"
    fi
    if ! python -c "import tsrx, tsrx_builtin, pytest, mypy" 2>/dev/null \
        || [ pyproject.toml -nt "$VENV/.tsrx-installed" ]; then
        python -m pip install -q -e ".[test,judge]"
        touch "$VENV/.tsrx-installed"
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    quickstart)
        setup
        exec tsrx train experiments/quickstart.toml "$@"
        ;;
    test)
        setup
        # lint and format first: cheap, and a failure names the file and line
        ruff check .
        ruff format --check .
        # types next: strict on tsrx/ ([tool.mypy] in pyproject.toml)
        mypy
        exec python -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh quickstart|test [extra args]" >&2
        exit 2
        ;;
esac
