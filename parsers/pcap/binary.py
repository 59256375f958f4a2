"""Vectorised byte gathers: read integers at many (unaligned) offsets of one buffer at once."""

from __future__ import annotations

import numpy as np


def gather_u8(a: np.ndarray, off: np.ndarray) -> np.ndarray:
    """a[off] as int64 (a is the uint8 view of a buffer)."""
    return a[off].astype(np.int64)


def gather_u16(a: np.ndarray, off: np.ndarray, big: bool = True) -> np.ndarray:
    """16-bit unsigned integers at `off` as int64; network byte order unless big=False."""
    hi, lo = (a[off], a[off + 1]) if big else (a[off + 1], a[off])
    return (hi.astype(np.int64) << 8) | lo


def gather_u32(a: np.ndarray, off: np.ndarray, big: bool = True) -> np.ndarray:
    """32-bit unsigned integers at `off` as int64; network byte order unless big=False."""
    if big:
        b0, b1, b2, b3 = a[off], a[off + 1], a[off + 2], a[off + 3]
    else:
        b3, b2, b1, b0 = a[off], a[off + 1], a[off + 2], a[off + 3]
    return (
        (b0.astype(np.int64) << 24)
        | (b1.astype(np.int64) << 16)
        | (b2.astype(np.int64) << 8)
        | b3.astype(np.int64)
    )


def gather_bytes(a: np.ndarray, off: np.ndarray, width: int) -> np.ndarray:
    """(len(off), width) uint8 matrix of the bytes at each offset (for addresses)."""
    return a[off[:, None] + np.arange(width, dtype=np.int64)[None, :]]


def safe_index(off: np.ndarray, need: int, limit: np.ndarray) -> np.ndarray:
    """Mask of offsets whose `need` bytes lie before `limit` (per-packet end)."""
    return off + need <= limit
