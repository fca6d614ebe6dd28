#!/usr/bin/env bash
# The whole test suite: `bash scripts/test.sh` (extra args go to pytest).
# pytest exits 5 when it collected no test; that is a failure here, like any non-zero exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
exec .venv/bin/python -m pytest "$@"
