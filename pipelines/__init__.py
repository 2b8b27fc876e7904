"""Benchmark kit for Apache Beam RunInference with PyTorch models.

A benchmark is config -> run -> report:
  matrix.py (config) -> run.py (runs a pipeline, writes a run record) -> report/ and publish/.
"""
