"""CAN scenarios for sample bundles and rule fixtures: python-can `Message` lists of a DC
charger's internal bus (control board + power modules PM1..PM4), and a candump -L writer
that follows can-utils (lib.c sprint_canframe) where python-can's CanutilsLogWriter is wrong
for error frames (it replaces the class bits with CAN_ERR_BUSERROR).

Bus layout: PMn sends status 0x180+n every 100 ms and a CANopen heartbeat 0x700+n every
1 s (NMT state 0x05 operational); the control board polls 0x200 every 100 ms. Error frames
are SocketCAN error frames (id = class bits, 8 data bytes, include/uapi/linux/can/error.h).
"""

from __future__ import annotations

import random

import can

T0 = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC
CAN_ERR_FLAG = 0x20000000


def _frame(t: float, can_id: int, data: bytes, ext: bool = False) -> can.Message:
    return can.Message(timestamp=t, arbitration_id=can_id, data=data, is_extended_id=ext, channel=0)


def _error(t: float, classes: int, data: list[int]) -> can.Message:
    return can.Message(timestamp=t, arbitration_id=classes, data=bytes(data), is_error_frame=True,
                       is_extended_id=False, channel=0)  # fmt: skip


def bus_traffic(duration_s: float, silent: dict[int, tuple[float, float]] | None = None,
                t0: float = T0, modules: int = 4, period_s: float = 0.1) -> list[can.Message]:  # fmt: skip
    """Healthy periodic traffic; `silent` = {module: (from_s, to_s)} mutes a module.
    Status frames every `period_s`; heartbeats every 10 periods."""
    silent = silent or {}
    msgs = []
    was_silent = dict.fromkeys(range(1, modules + 1), False)
    steps = round(duration_s / period_s)
    for k in range(steps):
        t = t0 + k * period_s
        msgs.append(_frame(t + 0.001, 0x200, bytes([k & 0xFF, 0x10, 0, 0])))
        for n in range(1, modules + 1):
            off = silent.get(n)
            if off and off[0] <= k * period_s < off[1]:
                was_silent[n] = True
                continue
            volt = 4000 + 10 * n + (k % 7)
            payload = volt.to_bytes(2, "little") + bytes([n, 0, 0x55, 0, 0, k & 0xFF])
            msgs.append(_frame(t + 0.002 * n + 0.002, 0x180 + n, payload))
            if k % 10 == n:  # heartbeat; NMT boot-up (0x00) first after a silence
                state = 0x00 if was_silent[n] else 0x05
                was_silent[n] = False
                msgs.append(_frame(t + period_s / 2 + 0.002 * n, 0x700 + n, bytes([state])))
    return msgs


def error_burst(t: float, count: int, spacing_s: float, rng: random.Random) -> list[can.Message]:
    """Bus errors (protocol stuff/form in the ACK or data field, some ACK missing)."""
    out = []
    for i in range(count):
        if rng.random() < 0.3:
            out.append(_error(t + i * spacing_s, 0x020 | 0x080, [0] * 8))  # ACK missing
        else:
            kind = rng.choice([0x04, 0x02, 0x01])  # stuff, form, bit
            loc = rng.choice([0x0A, 0x19, 0x08])  # data, ack slot, crc sequence
            out.append(_error(t + i * spacing_s, 0x008 | 0x080, [0, 0, kind, loc, 0, 0, 0, 0]))
    return out


def controller(t: float, what: str, tec: int, rec: int = 0) -> can.Message:
    """Controller state error frames with counters (CAN_ERR_CNT)."""
    if what == "bus_off":
        return _error(t, 0x040 | 0x200, [0, 0, 0, 0, 0, 0, min(tec, 255), rec])
    if what == "restarted":
        return _error(t, 0x100, [0] * 8)
    bits = {"warning": 0x08, "passive": 0x20, "active": 0x40}[what]
    return _error(t, 0x004 | 0x200, [0, bits, 0, 0, 0, 0, tec, rec])


def termination(
    duration_s: float, seed: int = 7, t0: float = T0, period_s: float = 0.1
) -> list[can.Message]:
    """Missing terminator: errors from the first second on, warning, passive, bus-off."""
    rng = random.Random(seed)
    msgs = bus_traffic(duration_s, t0=t0, period_s=period_s)
    t = 0.3
    while t < duration_s - 0.5:
        msgs += error_burst(t0 + t, 3, 0.02, rng)
        t += rng.uniform(0.15, 0.4)
    msgs.append(controller(t0 + 1.2, "warning", 96))
    msgs.append(controller(t0 + 2.5, "passive", 128))
    for k, at in enumerate((duration_s * 0.4, duration_s * 0.75)):
        msgs.append(controller(t0 + at, "bus_off", 256))
        msgs.append(controller(t0 + at + 0.2, "restarted", 0))
        msgs.append(controller(t0 + at + 0.9 + k, "passive", 130))
    return sorted(msgs, key=lambda m: m.timestamp)


def wiring(duration_s: float, bursts: list[float], drop: tuple[int, float, float] | None,
           seed: int = 11, t0: float = T0, period_s: float = 0.1) -> list[can.Message]:  # fmt: skip
    """Loose connector: short bursts at `bursts` (s), module `drop[0]` silent drop[1]..drop[2]."""
    rng = random.Random(seed)
    silent = {drop[0]: (drop[1], drop[2])} if drop else {}
    msgs = bus_traffic(duration_s, silent=silent, t0=t0, period_s=period_s)
    for b in bursts:
        msgs += error_burst(t0 + b, 25, 0.03, rng)
        msgs.append(controller(t0 + b + 0.4, "warning", 100))
        msgs.append(controller(t0 + b + 3.0, "active", 40))
    return sorted(msgs, key=lambda m: m.timestamp)


def module_offline(duration_s: float, node: int, from_s: float, to_s: float,
                   t0: float = T0, period_s: float = 0.1) -> list[can.Message]:  # fmt: skip
    """Clean bus; one module (status + heartbeat) silent between from_s and to_s."""
    msgs = bus_traffic(duration_s, silent={node: (from_s, to_s)}, t0=t0, period_s=period_s)
    return sorted(msgs, key=lambda m: m.timestamp)


def versions(
    duration_s: float, fw: dict[int, tuple[int, int, int]], t0: float = T0
) -> list[can.Message]:
    """Healthy traffic plus each module's version frame 0x500+n every 5 s (see VERSION_DBC)."""
    msgs = bus_traffic(duration_s, t0=t0)
    for k in range(int(duration_s / 5)):
        for n, (a, b, c) in fw.items():
            msgs.append(_frame(t0 + 5 * k + 0.3 + 0.01 * n, 0x500 + n, bytes([a, b, c, 0])))
    return sorted(msgs, key=lambda m: m.timestamp)


VERSION_DBC = (
    """VERSION ""

NS_ :

BS_:

BU_: CB PM1 PM2 PM3 PM4

"""
    + "".join(
        f"""BO_ {0x500 + n} PM{n}_Version: 4 PM{n}
 SG_ FwMajor : 0|8@1+ (1,0) [0|255] "" CB
 SG_ FwMinor : 8|8@1+ (1,0) [0|255] "" CB
 SG_ FwPatch : 16|8@1+ (1,0) [0|255] "" CB

BO_ {0x180 + n} PM{n}_Status: 8 PM{n}
 SG_ OutVoltage : 0|16@1+ (0.1,0) [0|1000] "V" CB
 SG_ State : 24|8@1+ (1,0) [0|255] "" CB

"""
        for n in range(1, 5)
    )
    + "".join(f'BA_ "GenMsgCycleTime" BO_ {0x180 + n} 100;\n' for n in range(1, 5))
    + 'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;\nBA_DEF_DEF_ "GenMsgCycleTime" 0;\n'
)


def candump_line(m: can.Message, iface: str = "can0") -> str:
    """One can-utils `candump -L` line for a python-can Message."""
    sec = int(m.timestamp)
    usec = round((m.timestamp - sec) * 1_000_000)
    if usec == 1_000_000:
        sec, usec = sec + 1, 0
    if m.is_error_frame:
        ident = f"{CAN_ERR_FLAG | (m.arbitration_id & 0x1FFFFFFF):08X}"
    elif m.is_extended_id:
        ident = f"{m.arbitration_id:08X}"
    else:
        ident = f"{m.arbitration_id:03X}"
    if m.is_fd:
        body = (
            "#"
            + f"{(1 if m.bitrate_switch else 0) | (2 if m.error_state_indicator else 0):X}"
            + m.data.hex().upper()
        )
    elif m.is_remote_frame:
        body = "R" + (str(m.dlc) if m.dlc else "")
    else:
        body = bytes(m.data).hex().upper()
    return f"({sec:010d}.{usec:06d}) {iface} {ident}#{body}"


def write_candump(path, msgs: list[can.Message], iface: str = "can0") -> None:
    with open(path, "w", encoding="ascii") as fh:
        for m in msgs:
            fh.write(candump_line(m, iface) + "\n")
