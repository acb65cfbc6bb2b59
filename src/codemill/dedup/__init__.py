"""Exact and near (MinHash-LSH) deduplication with The Stack v2 survivor ranking."""
