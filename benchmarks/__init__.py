"""Throughput benchmarks of every loader and the verdict on the cost of continuous sampling."""
