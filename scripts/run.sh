#!/usr/bin/env bash
# Quick start: set up and serve the app on the embedded store with the demo
# study (no Orthanc needed) at http://127.0.0.1:8050 (HOST/PORT to change).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python app.py
