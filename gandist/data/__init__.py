"""Datasets as WebDataset shards: writing them, the built-in synthetic sets, and per-rank streams."""
