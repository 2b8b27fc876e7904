"""Benchmark kit for Apache Beam RunInference with PyTorch models.

A benchmark is config -> plan -> run -> record -> report:
  matrix.py + profiles.py (config) -> plan.py (one frozen RunPlan per run, every check in
  preflight.py) -> launch.py (the plan's runner, runners.py, runs the worker package's pipeline,
  pipelines/worker/) -> record/ (the typed record, its store and ledger) -> publish/ and report/.
See docs/architecture.md.
"""
