"""TCP flow state for every packet, vectorised per chunk, with state carried across chunks.

Per flow (direction 0 = client, the side that sent the SYN) it keeps packet and byte
counts, SYN / SYN-ACK / FIN / RST, retransmissions (a segment ending at or before the
highest sequence already seen in its direction), duplicate ACKs and zero windows as
Wireshark's tcp.analysis defines them, handshake times, and the frame/time of the first
occurrence of each history letter (Zeek's conn.log history: upper case for the client).
State lives in numpy arrays indexed by flow id, so memory grows with flows, not packets.
"""

from __future__ import annotations

import numpy as np

from forensics.parsers.pcap.decode import PROTO_TCP, Packets

try:  # parsers/pcap/_pcapscan.c, built at install; optional: numpy does the same
    from forensics.parsers.pcap import _pcapscan
except ImportError:
    _pcapscan = None

FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
# Zeek's conn history letters, in the order of the hist arrays' last axis.
LETTERS = "SHADFRTW"
L_SYN, L_SYNACK, L_ACK, L_DATA, L_FIN, L_RST, L_RETR, L_ZWIN = range(8)
SERVER_PORTS = {80, 443, 8080, 8443, 8180, 9000, 9001, 9220, 19520, 53, 1883, 8883}
SEQ_MOD = 1 << 32
BIG = 1 << 34  # spacing for segmented running maxima (relative seq ends stay below 2^33)


class FlowTable:
    """All TCP flows of one capture. Arrays grow by doubling; index = flow id (0-based)."""

    def __init__(self, capacity: int = 1024):
        self.ids: dict[bytes, int] = {}
        self.n = 0
        self._hash_sorted = np.zeros(0, dtype=np.uint64)  # see _known
        self._hash_gid = np.zeros(0, dtype=np.int64)
        self._slots = np.full(16, -1, dtype=np.int64)  # the native index (see _ids_native)
        self._alloc(capacity)

    def _alloc(self, cap: int) -> None:
        def grow(name, shape, dtype, fill):
            old = getattr(self, name, None)
            new = np.full((cap, *shape), fill, dtype=dtype)
            if old is not None:
                new[: len(old)] = old
            setattr(self, name, new)

        for name in ("c_hi", "c_lo", "s_hi", "s_lo"):
            grow(name, (), np.uint64, 0)
        for name in ("c_port", "s_port", "ip_ver", "vlan", "first_frame", "last_frame"):
            grow(name, (), np.int64, 0)
        grow("key", (5,), np.uint64, 0)  # canonical flow key (lower endpoint first)
        grow("first_ts", (), np.int64, 0)
        grow("last_ts", (), np.int64, 0)
        grow("partial", (), bool, False)  # first packet seen was not a SYN
        for name in ("pkts", "bytes", "syn", "fin", "rst", "retrans", "dupack", "zerowin"):
            grow(name, (2,), np.int64, 0)
        grow("isn", (2,), np.int64, -1)
        grow("max_end", (2,), np.int64, -1)
        grow("last_ack", (2,), np.int64, -1)
        grow("last_win", (2,), np.int64, -1)
        grow("hist_frame", (2, len(LETTERS)), np.int64, 0)  # 0 = never
        grow("hist_ts", (2, len(LETTERS)), np.int64, 0)
        self.cap = cap

    # ------------------------------------------------------------ per chunk

    def update(self, pk: Packets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Folds the chunk's TCP packets into the flows. Returns (packet index in chunk,
        flow id, direction) for each TCP packet, in frame order."""
        idx = np.flatnonzero(pk.l4ok & (pk.proto == PROTO_TCP))
        if not len(idx):
            e = np.zeros(0, dtype=np.int64)
            return e, e, e
        if _pcapscan is not None:
            gid, d = self._ids_native(pk, idx)
        else:
            gid, d = self._ids(pk, idx)
        self._fold(pk, idx, gid, d)
        return idx, gid, d

    def _ids_native(self, pk: Packets, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow id and direction of each TCP packet, as _ids: the native scanner builds the
        canonical keys and looks them up in an open-addressing index of the flows (kept at
        most half full); new flows go through _exact."""
        cols = np.empty((6, len(idx)), dtype=np.uint64)  # gathered straight into place
        for row, col in enumerate((pk.src_hi, pk.src_lo, pk.dst_hi, pk.dst_lo)):
            np.take(col, idx, out=cols[row], mode="clip")
        cols[4], cols[5] = pk.sport[idx], pk.dport[idx]  # int64 -> uint64, one by one
        key = np.empty((len(idx), 5), dtype=np.uint64)
        out = np.empty((2, len(idx)), dtype=np.int64)
        _pcapscan.flow_ids(cols, self.key, self._slots, self.c_hi, self.c_lo, self.c_port,
                           self.n, key, out)  # fmt: skip
        gid, d = out[0], out[1]
        miss = np.flatnonzero(gid < 0)
        if len(miss):
            gid[miss] = self._exact(key[miss], pk, idx[miss])
            d[miss] = self._direction(pk, idx[miss], gid[miss])
        return gid, d

    def _direction(self, pk: Packets, idx: np.ndarray, gid: np.ndarray) -> np.ndarray:
        """0 for packets from the flow's client, 1 for the others."""
        c_match = (
            (pk.src_hi[idx] == self.c_hi[gid])
            & (pk.src_lo[idx] == self.c_lo[gid])
            & (pk.sport[idx].astype(np.uint64) == self.c_port[gid])
        )
        return np.where(c_match, 0, 1)

    def _ids(self, pk: Packets, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow id (new flows added) and direction of each TCP packet, with numpy."""
        sh, sl, dh, dl = pk.src_hi[idx], pk.src_lo[idx], pk.dst_hi[idx], pk.dst_lo[idx]
        sp, dp = pk.sport[idx].astype(np.uint64), pk.dport[idx].astype(np.uint64)
        swap = (sh > dh) | ((sh == dh) & ((sl > dl) | ((sl == dl) & (sp > dp))))
        key = np.empty((len(idx), 5), dtype=np.uint64)
        key[:, 0] = np.where(swap, dh, sh)
        key[:, 1] = np.where(swap, dl, sl)
        key[:, 2] = np.where(swap, sh, dh)
        key[:, 3] = np.where(swap, sl, dl)
        key[:, 4] = (np.where(swap, dp, sp) << np.uint64(16)) | np.where(swap, sp, dp)
        gid = self._known(key)
        miss = gid < 0
        if miss.any():
            gid[miss] = self._exact(key[miss], pk, idx[miss])
        return gid, self._direction(pk, idx, gid)

    def _known(self, key: np.ndarray) -> np.ndarray:
        """Flow id of each key row already in the table, -1 for the others. A sorted array
        of 64-bit key hashes answers it without sorting the packets; every hit is checked
        against the flow's full key, and a hash shared by two flows (never seen in
        practice) sends the whole chunk down the exact path."""
        gid = np.full(len(key), -1, dtype=np.int64)
        if not len(self._hash_sorted):
            return gid
        h = _mix(key)
        pos = np.minimum(np.searchsorted(self._hash_sorted, h), len(self._hash_sorted) - 1)
        hit = self._hash_sorted[pos] == h
        cand = self._hash_gid[pos[hit]]
        if not (key[hit] == self.key[cand]).all():
            return gid  # hash collision: _exact sorts it out for every row
        gid[hit] = cand
        return gid

    def _exact(self, key: np.ndarray, pk: Packets, idx: np.ndarray) -> np.ndarray:
        """Flow ids by exact key (new flows numbered in key order, as before)."""
        kv = np.ascontiguousarray(key).view(np.dtype((np.void, 40))).ravel()
        uniq, first, inv = np.unique(kv, return_index=True, return_inverse=True)
        gid_u = np.empty(len(uniq), dtype=np.int64)
        added = []
        for j, k in enumerate(uniq.tolist()):
            g = self.ids.get(k)
            if g is None:
                g = self._new(pk, int(idx[first[j]]))
                self.ids[k] = g
                self.key[g] = key[first[j]]
                added.append(g)
            gid_u[j] = g
        if added:
            self._index(np.asarray(added, dtype=np.int64))
        return gid_u[inv.ravel()]

    def _index(self, new: np.ndarray) -> None:
        """Adds new flows to the lookup index: the native slots (doubled and refilled when
        more than half full) or the sorted hashes of _known."""
        if _pcapscan is not None:
            if 2 * self.n > len(self._slots):
                size = len(self._slots)
                while 2 * self.n > size:
                    size *= 2
                self._slots = np.full(size, -1, dtype=np.int64)
                new = np.arange(self.n, dtype=np.int64)
            _pcapscan.slots_add(self.key, self._slots, new)
            return
        h = np.r_[self._hash_sorted, _mix(self.key[new])]
        g = np.r_[self._hash_gid, new]
        order = np.argsort(h, kind="stable")
        self._hash_sorted, self._hash_gid = h[order], g[order]

    def _new(self, pk: Packets, i: int) -> int:
        g = self.n
        self.n += 1
        if g >= self.cap:
            self._alloc(self.cap * 2)
        f = int(pk.flags[i])
        src = (pk.src_hi[i], pk.src_lo[i], int(pk.sport[i]))
        dst = (pk.dst_hi[i], pk.dst_lo[i], int(pk.dport[i]))
        if f & SYN:
            client_is_src = not f & ACK
        else:
            client_is_src = not (src[2] in SERVER_PORTS and dst[2] not in SERVER_PORTS)
            if src[2] < 1024 <= dst[2]:
                client_is_src = False
        c, s = (src, dst) if client_is_src else (dst, src)
        self.c_hi[g], self.c_lo[g], self.c_port[g] = c
        self.s_hi[g], self.s_lo[g], self.s_port[g] = s
        self.ip_ver[g] = pk.ip_ver[i]
        self.vlan[g] = pk.vlan[i]
        self.first_frame[g] = pk.chunk.frame[i]
        self.first_ts[g] = pk.chunk.ts_us[i]
        self.partial[g] = not f & SYN
        return g

    def _fold(self, pk: Packets, idx, gid, d) -> None:
        """Folds the chunk's TCP packets (idx, in frame order) into the flows' state: the
        native scanner packet after packet when built, else _fold_numpy (its reference)."""
        if _pcapscan is None:
            self._fold_numpy(pk, idx, gid, d)
            return
        packets = np.empty((9, len(idx)), dtype=np.int64)  # gathered straight into place
        packets[0], packets[1] = gid, d
        cols = (pk.flags, pk.pay_len, pk.chunk.frame, pk.chunk.ts_us, pk.seq, pk.ack, pk.win)
        for row, col in enumerate(cols, 2):
            np.take(col.astype(np.int64, copy=False), idx, out=packets[row], mode="clip")
        state = tuple(getattr(self, name) for name in _STATE)
        _pcapscan.fold(packets, state, self.last_frame, self.last_ts, self.hist_frame,
                       self.hist_ts, self.n)  # fmt: skip

    def _fold_numpy(self, pk: Packets, idx, gid, d) -> None:
        f = pk.flags[idx]
        plen = pk.pay_len[idx]
        frame = pk.chunk.frame[idx]
        ts = pk.chunk.ts_us[idx]
        seq, ack, win = pk.seq[idx], pk.ack[idx], pk.win[idx]
        grp = gid * 2 + d
        order = np.argsort(grp, kind="stable")  # frame order kept inside each group
        gs = grp[order]
        starts = np.r_[True, gs[1:] != gs[:-1]]
        ulast = np.flatnonzero(np.r_[gs[1:] != gs[:-1], True])
        ustart = np.flatnonzero(starts)
        ug, gfirst = gs[ustart], order[ustart]
        ugid, ud = ug // 2, ug % 2
        m = 2 * self.n  # per (flow, direction) counters: flat index grp of the (cap, 2) arrays

        def add(arr, weights=None, mask=None) -> None:
            g = grp if mask is None else grp[mask]
            if weights is None:
                arr.reshape(-1)[:m] += np.bincount(g, minlength=m)
            else:
                arr.reshape(-1)[:m] += np.bincount(g, weights, minlength=m).astype(np.int64)

        add(self.pkts)
        add(self.bytes, weights=plen)
        syn, fin, rst = (f & SYN) > 0, (f & FIN) > 0, (f & RST) > 0
        add(self.syn, mask=syn)
        add(self.fin, mask=fin)
        add(self.rst, mask=rst)
        np.maximum.at(self.last_frame, ugid, np.maximum.reduceat(frame[order], ustart))
        np.maximum.at(self.last_ts, ugid, np.maximum.reduceat(ts[order], ustart))

        unset = self.isn[ugid, ud] < 0
        self.isn[ugid[unset], ud[unset]] = seq[gfirst[unset]]
        rel = (seq - self.isn[gid, d]) % SEQ_MOD
        seg = plen + syn + fin
        end = rel + seg
        # retransmission: ends at or below the highest end seen before in this direction
        so = order
        prior = self._exclusive_max(
            gs, end[so] * (seg[so] > 0), starts, self.max_end[gs // 2, gs % 2]
        )
        keepalive = (seg[so] <= 1) & ~syn[so] & ~fin[so] & (end[so] == prior)
        retr_s = (seg[so] > 0) & (end[so] <= prior) & ~keepalive
        retr = np.empty_like(retr_s)
        retr[so] = retr_s
        top = np.maximum(prior, end[so] * (seg[so] > 0))[ulast]
        self.max_end[gs[ulast] // 2, gs[ulast] % 2] = np.maximum(
            self.max_end[gs[ulast] // 2, gs[ulast] % 2], top
        )
        # duplicate ACK (Wireshark): no payload, no SYN/FIN/RST, same ack and window as the
        # previous segment of this direction, window not zero
        ack_s, win_s = ack[so], win[so]
        prev_ack = np.where(starts, self.last_ack[gs // 2, gs % 2], np.r_[-1, ack_s[:-1]])
        prev_win = np.where(starts, self.last_win[gs // 2, gs % 2], np.r_[-1, win_s[:-1]])
        pure = (plen[so] == 0) & ((f[so] & (SYN | FIN | RST)) == 0) & ((f[so] & ACK) > 0)
        dup_s = pure & (ack_s == prev_ack) & (win_s == prev_win) & (win_s > 0)
        dup = np.empty_like(dup_s)
        dup[so] = dup_s
        self.last_ack[gs[ulast] // 2, gs[ulast] % 2] = ack_s[ulast]
        self.last_win[gs[ulast] // 2, gs[ulast] % 2] = win_s[ulast]
        zwin = (win == 0) & ((f & (SYN | FIN | RST)) == 0)
        add(self.retrans, mask=retr)
        add(self.dupack, mask=dup)
        add(self.zerowin, mask=zwin)

        pure_all = (plen == 0) & ((f & (SYN | FIN | RST)) == 0) & ((f & ACK) > 0)
        letters = (
            syn & ((f & ACK) == 0),
            syn & ((f & ACK) > 0),
            pure_all,
            plen > 0,
            fin,
            rst,
            retr,
            zwin,
        )
        for li, mask in enumerate(letters):
            # first packet with the letter per group: packets are sorted by group, frame
            # order kept, so it is the first selected position of each group
            sel = np.flatnonzero(mask[order])
            if not len(sel):
                continue
            gsel = gs[sel]
            head = np.r_[True, gsel[1:] != gsel[:-1]]
            g1 = gsel[head]
            gg, dd = g1 // 2, g1 % 2
            new = self.hist_frame[gg, dd, li] == 0
            pick = order[sel[head][new]]
            self.hist_frame[gg[new], dd[new], li] = frame[pick]
            self.hist_ts[gg[new], dd[new], li] = ts[pick]

    @staticmethod
    def _exclusive_max(gs, vals, starts, carry) -> np.ndarray:
        """Running maximum of vals before each element within its group (groups sorted),
        starting from carry (the group's maximum in earlier chunks)."""
        base = np.cumsum(starts) * BIG
        shifted = np.r_[0, (vals + base)[:-1]]
        shifted = np.where(starts, carry + base, np.maximum(shifted, carry + base))
        run = np.maximum.accumulate(shifted)
        return run - base

    def rel_seq(self, pk: Packets, idx, gid, d) -> np.ndarray:
        """Sequence numbers relative to each direction's first seen (SYN: data starts at 1)."""
        return (pk.seq[idx] - self.isn[gid, d]) % SEQ_MOD

    # ------------------------------------------------------------ results

    def history(self, g: int) -> str:
        """Zeek-style history: first occurrence of each letter, client upper case."""
        hf = self.hist_frame[g]
        steps = [(int(hf[d, li]), d, li) for d in (0, 1) for li in range(len(LETTERS)) if hf[d, li]]
        steps.sort()
        return "".join(LETTERS[li] if d == 0 else LETTERS[li].lower() for _, d, li in steps)


# per (flow, direction) arrays in the order the native fold takes them
_STATE = ("pkts", "bytes", "syn", "fin", "rst", "retrans", "dupack", "zerowin", "isn", "max_end",
          "last_ack", "last_win")  # fmt: skip

_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD], dtype=np.uint64,
)  # fmt: skip


def _mix(key: np.ndarray) -> np.ndarray:
    """64-bit hash of each (n, 5) uint64 key row (odd multipliers, xor-folded)."""
    h = (key * _MIX).view(np.uint64)
    x = h[:, 0] ^ h[:, 1] ^ h[:, 2] ^ h[:, 3] ^ h[:, 4]
    x ^= x >> np.uint64(31)
    return x * np.uint64(0xBF58476D1CE4E5B9)
