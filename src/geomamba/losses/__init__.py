"""geomamba.losses."""
