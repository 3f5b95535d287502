"""Benchmarks as library code; ``experiments/bench_*.py`` are their command lines.

* :mod:`.learning` — time to quality of the vector fields side by side, and their train-step
  throughput (``python -m experiments.bench_learning``).
"""
