"""Benchmarks (``slimspec-bench``): printed ratios measured side by side in one process."""
