#!/usr/bin/env bash
# Create the virtual environment in which MultiVI (scvi-tools) trains for the benchmarks.
#
# torch is installed first and pinned to the CPU build, so that scvi-tools' own
# `torch` requirement is already satisfied: a bare `pip install scvi-tools` would
# resolve the default (CUDA) torch and download gigabytes of GPU libraries.
#
# Usage: bash benchmarks/setup_multivi.sh [VENV_DIR]   (default benchmarks/.venv-multivi)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv-multivi}"
torch_spec="${MULTIVI_TORCH:-torch==2.13.0}"
scvi_spec="${MULTIVI_SCVI:-scvi-tools==1.4.2}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import scvi, torch" 2>/dev/null; then
    echo "MultiVI environment already set up at $venv"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# The `+cpu` wheel comes from pip's configured find-links (here /opt/wheels); elsewhere set
# MULTIVI_TORCH_INDEX to a CPU wheel index. PEP 440 ranks 2.13.0+cpu above 2.13.0, so
# pip picks the CPU build whenever it can see one.
index_args=()
if [ -n "${MULTIVI_TORCH_INDEX:-}" ]; then index_args=(--extra-index-url "$MULTIVI_TORCH_INDEX"); fi
"$venv/bin/python" -m pip install "$torch_spec" "${index_args[@]}"
"$venv/bin/python" -m pip install "$scvi_spec" mudata psutil
"$venv/bin/python" -c "import scvi, torch; print('scvi-tools', scvi.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
