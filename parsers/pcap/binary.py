"""Vectorised byte gathers: read integers at many (unaligned) offsets of one buffer at once."""

from __future__ import annotations

import numpy as np


def gather_u8(a: np.ndarray, off: np.ndarray) -> np.ndarray:
    """a[off] as int64 (a is the uint8 view of a buffer)."""
    return a[off].astype(np.int64)


_AR2 = np.arange(2, dtype=np.int64)
_AR4 = np.arange(4, dtype=np.int64)


def gather_u16(a: np.ndarray, off: np.ndarray, big: bool = True) -> np.ndarray:
    """16-bit unsigned integers at `off` as int64; network byte order unless big=False."""
    m = a[off[:, None] + _AR2]  # (n, 2) contiguous bytes: one gather, then a view
    return m.view(">u2" if big else "<u2").ravel().astype(np.int64)


def gather_u32(a: np.ndarray, off: np.ndarray, big: bool = True) -> np.ndarray:
    """32-bit unsigned integers at `off` as int64; network byte order unless big=False."""
    m = a[off[:, None] + _AR4]
    return m.view(">u4" if big else "<u4").ravel().astype(np.int64)


def gather_bytes(a: np.ndarray, off: np.ndarray, width: int) -> np.ndarray:
    """(len(off), width) uint8 matrix of the bytes at each offset (for addresses)."""
    return a[off[:, None] + np.arange(width, dtype=np.int64)[None, :]]


def safe_index(off: np.ndarray, need: int, limit: np.ndarray) -> np.ndarray:
    """Mask of offsets whose `need` bytes lie before `limit` (per-packet end)."""
    return off + need <= limit
