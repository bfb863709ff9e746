"""geomamba.cli."""
