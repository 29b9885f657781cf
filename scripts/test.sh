#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite. Integration tests use ../shared/data
# (or $SAGEHEALTH_SHARED_DATA) when present and skip cleanly when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -q "$@"
