#!/usr/bin/env bash
# The README's first command: the whole federation on one machine, on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/demo.py "$@"
