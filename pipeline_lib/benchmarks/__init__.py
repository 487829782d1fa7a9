"""Benchmark evaluation: judged benchmarks, preference statistics and confidence intervals."""
