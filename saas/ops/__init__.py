"""Operating a node and its network (issue 19): health, diagnostics, the log ring, self-test, metrics."""
