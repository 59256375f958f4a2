"""Vectorised BLF container decode: find every object signature of a decompressed container
at C speed, check that they chain (each object ends where the next begins, so no 'LOBJ' in
payload bytes fooled us), and gather the fields of all CAN_MESSAGE/CAN_MESSAGE2 objects
(header version 1) with numpy. Every other object goes through `BlfReader._object` one by
one, so results equal the reference loop; a container that does not chain takes that loop.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from forensics.parsers.can.errorclass import ErrorInfo, decode_sja1000_ecc
from forensics.parsers.can.frames import ERR, FRAME_SCHEMA, RTR, TX

_SIG = np.frombuffer(b"LOBJ", dtype=np.uint8)


def _u(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """Little-endian unsigned ints of `width` bytes at each position."""
    out = np.zeros(len(pos), dtype=np.uint64)
    for k in range(width):
        out |= buf[pos + k].astype(np.uint64) << np.uint64(8 * k)
    return out


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


def decode(reader, data: bytes, container_off: int) -> bytes | None:
    """Decodes whole objects of `data`; returns the incomplete tail, or None to fall back."""
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
    v1 = (hver == 1) & (hsize == 32)
    fast = ((otype == 1) | (otype == 86)) & v1 & (size >= 48)
    # CAN_ERROR_EXT whose 32-byte body lies inside the object: same bytes as the reference reads
    err = (otype == 73) & v1 & (size >= 64)
    base_no = reader.obj_no
    reader.obj_no += n_whole
    for i in np.flatnonzero(~fast & ~err):  # the rest, in file order, through the reference
        p = int(pos[i])
        reader.obj_no_override = base_no + int(i) + 1
        reader._object(
            data, p, int(hsize[i]), int(hver[i]), int(size[i]), int(otype[i]), container_off
        )
    reader.obj_no_override = None
    idx = np.flatnonzero(fast)
    if len(idx):
        reader.w.append_frames(_frames(buf, pos[idx], idx + base_no + 1, reader.w.offset_us))
        reader.src.accepted(len(idx))
    idx = np.flatnonzero(err)
    if len(idx):
        frames, errors = _error_frames(
            buf, pos[idx], idx + base_no + 1, reader.w.offset_us, reader.w.loc_unit
        )
        reader.w.append_frames(frames)
        reader.w.append_errors(errors)
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
    take = np.arange(8)[None, :] < lens[:, None]
    payload = buf[(p + 40)[:, None] + np.arange(8)[None, :]][take]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    data = pa.BinaryArray.from_buffers(
        pa.binary(), len(p), [None, pa.py_buffer(offsets), pa.py_buffer(payload.tobytes())]
    )
    return pa.Table.from_arrays(
        [
            _arrow(loc, np.int64, pa.int64()),
            _arrow(ts, np.int64, pa.int64()).cast(pa.timestamp("us")),
            _arrow(ch, np.uint16, pa.uint16()).cast(pa.string()),
            _arrow(cid & np.uint64(0x1FFFFFFF), np.uint32, pa.uint32()),
            _arrow(flags, np.uint8, pa.uint8()),
            _arrow(dlc, np.uint8, pa.uint8()),
            data,
        ],
        schema=FRAME_SCHEMA,
    )


_LIST = pl.List(pl.String)
_INFO = {"key": pl.UInt16, "classes": _LIST, "controller": _LIST, "protocol": _LIST,
         "location": pl.String, "transceiver": pl.String, "tx_errors": pl.Int16,
         "rx_errors": pl.Int16, "state": pl.String}  # fmt: skip


def _error_frames(buf, p, loc, offset_us: int, unit: str) -> tuple[pa.Table, pa.Table]:
    """CAN_ERROR_EXT objects (header v1) as `BlfReader._object` writes them: an error frame
    row, and its error record from the SJA1000 code (decoded once per distinct code)."""
    hflags = _u(buf, p + 16, 4)
    stamp = _u(buf, p + 24, 8).astype(np.int64)
    ts = np.where(hflags == 1, stamp * 10, (stamp + 500) // 1000) + offset_us
    body = p + 32
    ch = _u(buf, body, 2)
    key = np.where(_u(buf, body + 4, 4) & np.uint64(1), buf[body + 8].astype(np.uint16), 256)
    dlc = np.minimum(buf[body + 10] & 15, 8).astype(np.int32)
    cid = _u(buf, body + 16, 4)
    take = np.arange(8)[None, :] < dlc[:, None]
    payload = buf[(body + 24)[:, None] + np.arange(8)[None, :]][take]
    offsets = np.concatenate([[0], np.cumsum(dlc)]).astype(np.int32)
    data = pa.BinaryArray.from_buffers(
        pa.binary(), len(p), [None, pa.py_buffer(offsets), pa.py_buffer(payload.tobytes())]
    )
    tss = _arrow(ts, np.int64, pa.int64()).cast(pa.timestamp("us"))
    chs = _arrow(ch, np.uint16, pa.uint16()).cast(pa.string())
    frames = pa.Table.from_arrays(
        [
            _arrow(loc, np.int64, pa.int64()),
            tss,
            chs,
            _arrow(cid & np.uint64(0x1FFFFFFF), np.uint32, pa.uint32()),
            _arrow(np.full(len(p), ERR), np.uint8, pa.uint8()),
            _arrow(dlc, np.uint8, pa.uint8()),
            data,
        ],
        schema=FRAME_SCHEMA,
    )
    rows = []
    for k in np.unique(key).tolist():  # 256: no SJA1000 code, an empty record
        i = decode_sja1000_ecc(k) if k < 256 else ErrorInfo()
        rows.append((k, i.classes, i.controller, i.protocol, i.location, i.transceiver,
                     i.tx_errors, i.rx_errors, i.state))  # fmt: skip
    info = pl.DataFrame(rows, schema=_INFO, orient="row")
    recs = pl.DataFrame(
        {
            "loc": pl.Series(np.asarray(loc, dtype=np.int64)),
            "ts": pl.from_arrow(tss),
            "channel": pl.from_arrow(chs),
            "key": pl.Series(key.astype(np.uint16)),
        }
    )
    errors = recs.join(info, on="key", how="left").select(
        pl.col("loc"),
        (pl.lit(unit + " ") + pl.col("loc").cast(pl.String)).alias("locator"),
        pl.col("ts"),
        pl.col("channel"),
        pl.lit("error_frame").alias("source"),
        *[pl.col(c) for c in list(_INFO)[1:]],
        pl.lit(None, pl.String).alias("text"),
    )
    return frames, errors.to_arrow()


def _arrow(values: np.ndarray, dtype, typ: pa.DataType) -> pa.Array:
    """A numpy column as Arrow without pa.array (which imports pandas on first use)."""
    a = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(typ, len(a), [None, pa.py_buffer(a)])
