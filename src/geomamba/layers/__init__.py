"""Building blocks, one concern per file. Import them from their modules, e.g.
``from geomamba.layers.ss2d import SS2D``."""
