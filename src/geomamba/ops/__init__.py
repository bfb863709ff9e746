"""Low-level ops: the selective scan, the SS2D image-layout scan, cross-scan / cross-merge.

``selective_scan`` and ``ss2d_scan`` are custom ops (``geomamba::selective_scan``,
``geomamba::ss2d_scan``) dispatching to a backend (``"auto"``, ``"ref"``, ``"triton"``; environment
variable ``GEOMAMBA_SCAN_BACKEND``), see :mod:`geomamba.ops.selective_scan`.
"""

from geomamba.ops.cross_scan import (
    cross_merge,
    cross_scan,
    from_line_order,
    from_scan_order,
    to_line_order,
    to_scan_order,
)
from geomamba.ops.selective_scan import (
    BackendUnavailableError,
    available_backends,
    register_backend,
    selective_scan,
)
from geomamba.ops.ss2d_scan import ss2d_scan

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "cross_merge",
    "cross_scan",
    "from_line_order",
    "from_scan_order",
    "register_backend",
    "selective_scan",
    "ss2d_scan",
    "to_line_order",
    "to_scan_order",
]
