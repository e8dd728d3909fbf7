"""Data pipeline: corpus -> token shards -> instances -> masking -> batches."""
