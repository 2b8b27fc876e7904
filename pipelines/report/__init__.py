"""Reports over the run history: HTML page, run comparison, regression detection, cost."""
