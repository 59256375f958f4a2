"""One direction of a TCP byte stream, reassembled from segments in any order.

Robust to loss: a segment beyond the next expected byte waits in a small queue; when the
queue is full (or the flow ends) the missing bytes are declared a gap, the stream jumps
over it and says so (`gaps`, and `take_gap()` for the protocol parser above, which must
resynchronise). Every byte keeps the frame and time of the segment that carried it, so a
message is located at the frame that completed it (as Wireshark shows reassembled PDUs).
"""

from __future__ import annotations

import bisect

MAX_PENDING = 64  # out-of-order segments held before declaring a gap
MAX_BUFFER = 4 << 20  # unconsumed bytes kept per direction


class Stream:
    """Reassembles one direction. Sequence numbers are relative (see FlowTable.rel_seq)."""

    __slots__ = ("_gap", "_marks", "_pending", "buf", "consumed", "gap_bytes", "gaps", "next")

    def __init__(self) -> None:
        self.next: int | None = None  # next expected relative sequence number
        self.buf = bytearray()  # bytes not yet consumed by the protocol parser
        self.consumed = 0  # stream offset of buf[0]
        self._marks: list[tuple[int, int, int]] = []  # (stream offset, frame, ts_us)
        self._pending: dict[int, tuple[bytes, int, int]] = {}
        self.gaps = 0
        self.gap_bytes = 0
        self._gap = False

    def feed(self, seq: int, data: bytes, frame: int, ts: int) -> None:
        """Adds one segment's payload."""
        if not data:
            return
        if self.next is None:
            self.next = seq
        if seq + len(data) <= self.next:
            return  # retransmission of bytes already had
        if seq > self.next:
            self._pending[seq] = (data, frame, ts)
            if len(self._pending) > MAX_PENDING:
                self.skip_gap()
            return
        self._append(data[self.next - seq :], frame, ts)
        self._drain()

    def _append(self, data: bytes, frame: int, ts: int) -> None:
        if len(self.buf) + len(data) > MAX_BUFFER:
            return
        self._marks.append((self.consumed + len(self.buf), frame, ts))
        self.buf += data
        self.next += len(data)

    def _drain(self) -> None:
        while self._pending:
            nxt = min(self._pending)
            if nxt > self.next:
                return
            data, frame, ts = self._pending.pop(nxt)
            if nxt + len(data) > self.next:
                self._append(data[self.next - nxt :], frame, ts)

    def skip_gap(self) -> None:
        """Declares the bytes up to the lowest queued segment lost and resumes there."""
        if not self._pending:
            return
        nxt = min(self._pending)
        self.gaps += 1
        self.gap_bytes += nxt - self.next
        # what is left unconsumed before the gap can never complete a message
        self.consumed += len(self.buf)
        self.buf.clear()
        self.next = nxt
        self._gap = True
        self._drain()

    def take_gap(self) -> bool:
        """True once after each gap: the parser above must resynchronise."""
        gap, self._gap = self._gap, False
        return gap

    def consume(self, n: int) -> tuple[int, int]:
        """Drops n bytes from the front; returns (frame, ts_us) of the segment holding the
        last of them (where the message completed)."""
        last = self.consumed + n - 1
        i = bisect.bisect_right(self._marks, (last, 1 << 62, 0)) - 1
        frame, ts = self._marks[max(i, 0)][1:]
        del self.buf[:n]
        self.consumed += n
        # forget marks wholly before the new front
        j = bisect.bisect_right(self._marks, (self.consumed, 1 << 62, 0)) - 1
        if j > 0:
            del self._marks[:j]
        return frame, ts

    def where(self, offset: int = 0) -> tuple[int, int]:
        """(frame, ts_us) of the segment holding buf[offset]."""
        pos = self.consumed + offset
        i = bisect.bisect_right(self._marks, (pos, 1 << 62, 0)) - 1
        return self._marks[max(i, 0)][1:] if self._marks else (0, 0)
