"""Benchmarks of the email sync (not part of the test suite): ``bash scripts/bench.sh``. See docs/BENCHMARKS.md."""
