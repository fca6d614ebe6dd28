"""The run steps of one sync job, one module per step, over staged batches (see docs/PIPELINE.md)."""
