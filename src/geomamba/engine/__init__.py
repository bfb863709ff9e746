"""geomamba.engine."""
