"""Vectorised BLF container decode: the objects of a batch of decompressed containers are
walked by the native walker (parsers/can/_textscan.c, the same steps as BlfReader._inner),
or where it is not built, found with numpy (every object signature, checked to chain, so no
'LOBJ' in payload bytes fooled us). Either way the fields of all CAN_MESSAGE/CAN_MESSAGE2
objects (header version 1) become columns at once; every other object goes through
`BlfReader._object` one by one, so results equal the reference loop; data either walk
cannot vouch for takes that loop.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa

from forensics.parsers.can import textscan
from forensics.parsers.can.frames import FRAME_SCHEMA, RTR, STORE_SCHEMA, TX

_OBJ_BASE = struct.Struct("<4sHHII")  # as blf.OBJ_BASE: signature, hsize, hver, size, type

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
    walked = _walk_native(data) if textscan.AVAILABLE else _walk_numpy(data)
    if walked is None:
        return None
    n_objects, tail, slow, fields = walked
    base_no = reader.obj_no
    reader.obj_no += n_objects
    # the other objects, in file order, through the reference code
    where = np.searchsorted(np.asarray(ends), slow[:, 1] + slow[:, 4] - 1, side="right")
    for (i, p, hsize, hver, size, otype), k in zip(slow.tolist(), where.tolist(), strict=True):
        reader.obj_no_override = base_no + i + 1
        reader._object(data, p, hsize, hver, size, otype, offsets[min(k, len(offsets) - 1)])
    reader.obj_no_override = None
    if len(fields["index"]):
        reader.w.append_frames(_frames(fields, base_no + 1, reader.w.offset_us))
        reader.src.accepted(len(fields["index"]))
    return data[tail:]


# A walk returns (objects walked, tail offset, other objects as rows of (index, offset,
# hsize, hver, size, otype), CAN_MESSAGE fields by name) or None.


def _walk_native(data: bytes):
    cols = textscan.walk_blf(data)
    if cols is None:
        return None
    other = np.frombuffer(cols["other"], np.int64).reshape(-1, 2)
    heads = [_OBJ_BASE.unpack_from(data, p)[1:] for p in other[:, 1].tolist()]
    slow = np.column_stack([other, np.array(heads, np.int64).reshape(-1, 4)])
    fields = {
        "index": np.frombuffer(cols["index"], np.int64),
        "hflags": np.frombuffer(cols["hflags"], np.uint64),
        "stamp": np.frombuffer(cols["stamp"], np.int64),
        "channel": np.frombuffer(cols["channel"], np.uint8),
        "mflags": np.frombuffer(cols["mflags"], np.uint8),
        "dlc": np.frombuffer(cols["dlc"], np.uint8),
        "can_id": np.frombuffer(cols["can_id"], np.uint32).astype(np.uint64),
        "payload": np.frombuffer(cols["payload"], np.uint64),
    }
    return cols["objects"], cols["tail"], slow, fields


def _walk_numpy(data: bytes):
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
    tail = int(pos[n_whole]) if n_whole < len(pos) else int(end[-1])
    pos, size = pos[:n_whole], size[:n_whole]
    otype = _u(buf, pos + 12, 4)
    hsize = _u(buf, pos + 4, 2)
    hver = _u(buf, pos + 6, 2)
    fast = ((otype == 1) | (otype == 86)) & (hver == 1) & (hsize == 32) & (size >= 48)
    i = np.flatnonzero(~fast)
    slow = np.column_stack([i, pos[i], hsize[i], hver[i], size[i], otype[i]]).astype(np.int64)
    p = pos[fast]
    mflags, dlc = buf[p + 34], buf[p + 35]
    lens = np.where(mflags & 0x80, 0, np.minimum(dlc, 8))
    grid = buf[(p + 40)[:, None] + np.arange(8)[None, :]]
    grid[np.arange(8)[None, :] >= lens[:, None]] = 0
    value = grid.view(">u8").ravel().astype(np.uint64)
    shift = (8 * (8 - lens)).astype(np.uint64)
    fields = {
        "index": np.flatnonzero(fast),
        "hflags": _u(buf, p + 16, 4),
        "stamp": _u(buf, p + 24, 8).astype(np.int64),
        "channel": _u(buf, p + 32, 2),
        "mflags": mflags,
        "dlc": dlc,
        "can_id": _u(buf, p + 36, 4),
        "payload": np.where(lens > 0, value >> np.minimum(shift, 63), 0).astype(np.uint64),
    }
    return n_whole, tail, slow, fields


def _frames(f: dict, first_no: int, offset_us: int) -> pa.Table:
    """can_frames rows of the CAN_MESSAGE objects (`payload`: their first min(dlc, 8) data
    bytes, none for remote frames, as a big-endian integer)."""
    stamp, hflags, dlc, cid, mflags = f["stamp"], f["hflags"], f["dlc"], f["can_id"], f["mflags"]
    ts = np.where(hflags == 1, stamp * 10, (stamp + 500) // 1000) + offset_us
    rtr = (mflags & 0x80) != 0
    flags = ((cid >> np.uint64(31)).astype(np.uint8)) | np.where(rtr, RTR, 0).astype(np.uint8)
    flags |= np.where(mflags & 1, TX, 0).astype(np.uint8)
    cols = [
        _arrow(f["index"] + first_no, np.int64, pa.int64()),
        _arrow(ts, np.int64, pa.int64()).cast(pa.timestamp("us")),
        _arrow(f["channel"], np.uint16, pa.uint16()).cast(pa.string()),
        _arrow(cid & np.uint64(0x1FFFFFFF), np.uint32, pa.uint32()),
        _arrow(flags, np.uint8, pa.uint8()),
        _arrow(dlc, np.uint8, pa.uint8()),
    ]
    if (rtr | (dlc <= 8)).all():  # the store layout at once
        cols += [_arrow(f["payload"], np.uint64, pa.uint64()), pa.nulls(len(ts), pa.binary())]
        return pa.Table.from_arrays(cols, schema=STORE_SCHEMA)
    # DLC 9-15 on classic CAN (8 bytes): as bytes, for frames.store_layout to judge
    lens = np.where(rtr, 0, np.minimum(dlc, 8)).astype(np.int32)
    be = f["payload"].astype(">u8").view(np.uint8).reshape(-1, 8)
    take = np.arange(8)[None, :] >= (8 - lens)[:, None]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    data = pa.BinaryArray.from_buffers(
        pa.binary(), len(ts), [None, pa.py_buffer(offsets), pa.py_buffer(be[take].tobytes())]
    )
    return pa.Table.from_arrays([*cols, data], schema=FRAME_SCHEMA)


def _arrow(values: np.ndarray, dtype, typ: pa.DataType) -> pa.Array:
    """A numpy column as Arrow without pa.array (which imports pandas on first use)."""
    a = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(typ, len(a), [None, pa.py_buffer(a)])
