"""geomamba.experiments."""
