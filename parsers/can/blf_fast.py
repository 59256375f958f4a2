"""Vectorised BLF container decode: find every object signature of a decompressed container
at C speed, check that they chain (each object ends where the next begins, so no 'LOBJ' in
payload bytes fooled us), and gather the fields of all CAN_MESSAGE/CAN_MESSAGE2 objects
(header version 1) with numpy. Every other object goes through `BlfReader._object` one by
one, so results equal the reference loop; a container that does not chain takes that loop.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from forensics.parsers.can.frames import FRAME_SCHEMA, RTR, STORE_SCHEMA, TX

_SIG = np.frombuffer(b"LOBJ", dtype=np.uint8)


def _u(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """Little-endian unsigned ints of `width` (1, 2, 4, 8) bytes at each position, as uint64:
    one gather of the bytes, then read as integers in place."""
    grid = buf[pos[:, None] + np.arange(width)]
    return grid.view(f"<u{width}").ravel().astype(np.uint64)


def signatures(buf: np.ndarray) -> np.ndarray:
    """Offsets of every b'LOBJ' in `buf` (it cannot overlap itself, so these are exactly
    re.finditer's matches), compared byte-wise by numpy."""
    if len(buf) < 4:
        return np.zeros(0, dtype=np.int64)
    n = len(buf) - 3
    hit = buf[:n] == _SIG[0]
    for k in range(1, 4):
        hit &= buf[k : k + n] == _SIG[k]
    return np.flatnonzero(hit).astype(np.int64)


def decode(reader, data: bytes, ends: list[int], offsets: list[int]) -> bytes | None:
    """Decodes whole objects of `data`; returns the incomplete tail, or None (before doing
    anything) to fall back. `data` may join several containers: the one ending at byte
    `ends[k]` of it is at file offset `offsets[k]`, which an object's rejects name when the
    object ends inside it (as the container-by-container reference does)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    pos = signatures(buf)
    if len(pos) < 32 or pos[0] != 0:
        return None
    ok_hdr = pos + 16 <= len(data)
    pos = pos[ok_hdr]
    size = _u(buf, pos + 8, 4).astype(np.int64)
    end = pos + size
    # objects chain: the next signature sits at end or end rounded up to 4 (padding)
    nxt = pos[1:]
    chained = (nxt == end[:-1]) | (nxt == end[:-1] + (-end[:-1] % 4))
    if not chained.all():
        return None
    whole = end <= len(data)
    if not whole[:-1].all():
        return None
    n_whole = int(whole.sum())
    tail = data[int(pos[n_whole]) :] if n_whole < len(pos) else data[int(end[-1]) :]
    pos, size = pos[:n_whole], size[:n_whole]
    otype = _u(buf, pos + 12, 4)
    hsize = _u(buf, pos + 4, 2)
    hver = _u(buf, pos + 6, 2)
    fast = ((otype == 1) | (otype == 86)) & (hver == 1) & (hsize == 32) & (size >= 48)
    base_no = reader.obj_no
    reader.obj_no += n_whole
    slow = np.flatnonzero(~fast)
    where = np.searchsorted(np.asarray(ends), pos[slow] + size[slow] - 1, side="right")
    for i, k in zip(slow.tolist(), where.tolist(), strict=True):
        # the rest, in file order, through the reference code
        p = int(pos[i])
        reader.obj_no_override = base_no + i + 1
        off = offsets[min(k, len(offsets) - 1)]
        reader._object(data, p, int(hsize[i]), int(hver[i]), int(size[i]), int(otype[i]), off)
    reader.obj_no_override = None
    idx = np.flatnonzero(fast)
    if len(idx):
        reader.w.append_frames(_frames(buf, pos[idx], idx + base_no + 1, reader.w.offset_us))
        reader.src.accepted(len(idx))
    return tail


def _frames(buf: np.ndarray, p: np.ndarray, loc: np.ndarray, offset_us: int) -> pa.Table:
    hflags = _u(buf, p + 16, 4)
    stamp = _u(buf, p + 24, 8).astype(np.int64)
    ts = np.where(hflags == 1, stamp * 10, (stamp + 500) // 1000) + offset_us
    ch = _u(buf, p + 32, 2)
    mflags = buf[p + 34]
    dlc = buf[p + 35]
    cid = _u(buf, p + 36, 4)
    rtr = (mflags & 0x80) != 0
    flags = ((cid >> np.uint64(31)).astype(np.uint8)) | np.where(rtr, RTR, 0).astype(np.uint8)
    flags |= np.where(mflags & 1, TX, 0).astype(np.uint8)
    lens = np.where(rtr, 0, np.minimum(dlc, 8)).astype(np.int32)
    grid = buf[(p + 40)[:, None] + np.arange(8)[None, :]]
    cols = [
        _arrow(loc, np.int64, pa.int64()),
        _arrow(ts, np.int64, pa.int64()).cast(pa.timestamp("us")),
        _arrow(ch, np.uint16, pa.uint16()).cast(pa.string()),
        _arrow(cid & np.uint64(0x1FFFFFFF), np.uint32, pa.uint32()),
        _arrow(flags, np.uint8, pa.uint8()),
        _arrow(dlc, np.uint8, pa.uint8()),
    ]
    if (rtr | (dlc <= 8)).all():  # the store layout at once: the bytes as one integer
        grid[np.arange(8)[None, :] >= lens[:, None]] = 0
        value = grid.view(">u8").ravel().astype(np.uint64)
        shift = (8 * (8 - lens)).astype(np.uint64)
        payload = np.where(lens > 0, value >> np.minimum(shift, 63), 0).astype(np.uint64)
        cols += [_arrow(payload, np.uint64, pa.uint64()), pa.nulls(len(p), pa.binary())]
        return pa.Table.from_arrays(cols, schema=STORE_SCHEMA)
    take = np.arange(8)[None, :] < lens[:, None]  # DLC 9-15 on classic CAN: frames.store_layout
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    data = pa.BinaryArray.from_buffers(
        pa.binary(), len(p), [None, pa.py_buffer(offsets), pa.py_buffer(grid[take].tobytes())]
    )
    return pa.Table.from_arrays([*cols, data], schema=FRAME_SCHEMA)


def _arrow(values: np.ndarray, dtype, typ: pa.DataType) -> pa.Array:
    """A numpy column as Arrow without pa.array (which imports pandas on first use)."""
    a = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(typ, len(a), [None, pa.py_buffer(a)])
