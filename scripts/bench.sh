#!/usr/bin/env bash
# The benchmark suite (not part of the tests): `bash scripts/bench.sh` (about 15 minutes on 2 cores),
# `bash scripts/bench.sh --quick` (a smoke run of a few minutes). Extra args go to `python -m bench`.
# Writes bench/results.json (--quick: bench/out/results-quick.json) and prints a table. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
exec .venv/bin/python -m bench "$@"
