"""Low-level ops: the selective scan and the 2-D cross-scan / cross-merge."""

from geomamba.ops.cross_scan import cross_merge, cross_scan
from geomamba.ops.selective_scan import selective_scan

__all__ = ["cross_merge", "cross_scan", "selective_scan"]
