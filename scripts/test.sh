#!/usr/bin/env bash
# Set up (Debian packages when root, the dev requirements) and run the whole
# test suite; extra arguments go to pytest (e.g. -k pacs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
exec .venv/bin/python -m pytest "$@"
