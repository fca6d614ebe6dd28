#!/usr/bin/env bash
# Quick start, command 1: run every sync job's DAG end to end against the local sandboxes.
# `bash scripts/demo.sh` (add --ui to browse the runs in the Airflow UI afterwards).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/venv.sh
exec .venv/bin/python scripts/demo.py "$@"
