#!/usr/bin/env bash
# Create .fedn095/, a separate venv holding FEDn 0.9.5 for the compatibility tests.
# FEDn pins grpcio 1.60 / protobuf 4.25, so it cannot share the project venv; it also
# imports tenacity without declaring it. Safe to run again: an existing good venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FEDN_VENV:-.fedn095}
PY=${PYTHON3:-python3}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import fedn, tenacity, importlib.metadata as m; assert m.version("fedn") == "0.9.5"' 2>/dev/null; then
  echo "$VENV already holds fedn 0.9.5"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "fedn==0.9.5" tenacity
"$VENV/bin/python" -c 'import fedn, importlib.metadata as m; print("fedn", m.version("fedn"), "installed in '"$VENV"'")'
