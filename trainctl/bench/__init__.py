"""Benchmarks of training steps: timing with warm-up, medians and percentiles."""
