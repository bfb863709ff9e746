"""geomamba.data."""
