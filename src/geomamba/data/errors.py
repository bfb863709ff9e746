"""Errors raised for bad input. The CLI prints their message as one line and exits non-zero.

``GeomambaError`` is the common base of every "bad input" error (data, config, checkpoint); a bug
raises something else and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DataError", "GeomambaError"]


class GeomambaError(Exception):
    """Bad input given to geomamba (a file, a config value, a checkpoint); the message says which."""


class DataError(GeomambaError, ValueError):
    """A data file or folder is missing, unreadable or inconsistent; the message names it."""
