"""geomamba.metrics."""
