#!/usr/bin/env bash
# Set up (first run only) and run the end-to-end demo on the bundled sample data.
# Usage: scripts/demo.sh [--home DIR]   (default store: ./sage-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sagehealth demo "$@"
