"""Vectorised byte gathers: read integers at many (unaligned) offsets of one buffer at once.

A 16/32-bit gather reads through a view of the buffer whose elements overlap (stride one
byte), so each value is one element of a single fancy-index gather: no (n, width) index
matrix, about 2.5x faster than gathering the bytes and viewing them.
"""

from __future__ import annotations

import numpy as np


def gather_u8(a: np.ndarray, off: np.ndarray) -> np.ndarray:
    """a[off] as int64 (a is the uint8 view of a buffer)."""
    return a[off].astype(np.int64)


def overlapping(a: np.ndarray, dtype: str) -> np.ndarray:
    """View of the uint8 array `a` with one `dtype` element starting at every byte."""
    width = np.dtype(dtype).itemsize
    return np.ndarray((max(len(a) - width + 1, 0),), dtype, buffer=a, offset=0, strides=(1,))


def gather_u16(a: np.ndarray, off: np.ndarray, big: bool = True) -> np.ndarray:
    """16-bit unsigned integers at `off` as int64; network byte order unless big=False."""
    return overlapping(a, ">u2" if big else "<u2")[off].astype(np.int64)


def gather_u32(a: np.ndarray, off: np.ndarray, big: bool = True) -> np.ndarray:
    """32-bit unsigned integers at `off` as int64; network byte order unless big=False."""
    return overlapping(a, ">u4" if big else "<u4")[off].astype(np.int64)


def gather_bytes(a: np.ndarray, off: np.ndarray, width: int) -> np.ndarray:
    """(len(off), width) uint8 matrix of the bytes at each offset (for addresses)."""
    return a[off[:, None] + np.arange(width, dtype=np.int64)[None, :]]


def safe_index(off: np.ndarray, need: int, limit: np.ndarray) -> np.ndarray:
    """Mask of offsets whose `need` bytes lie before `limit` (per-packet end)."""
    return off + need <= limit
