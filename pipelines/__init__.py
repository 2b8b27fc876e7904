"""Benchmark kit for Apache Beam RunInference with PyTorch models.

A benchmark is config -> plan -> run -> record -> report:
  matrix.py + profiles.py (config) -> plan.py (one frozen RunPlan per run, every check) ->
  runners.py (runs the worker package's pipeline, pipelines/worker/) -> run_record.py (the
  record) -> publish/ and report/. See docs/architecture.md.
"""
