"""What the SDK worker processes import, and all that goes into the worker image: the
pipeline, the model handler, the tasks, dead letters, telemetry and per-process stats.

Nothing here imports from the launcher side (pipelines.* outside this package): a test says so.
"""
