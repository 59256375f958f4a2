"""CAN error classes: Linux SocketCAN error frames (include/uapi/linux/can/error.h), the
SJA1000 error code capture register that Vector BLF and PEAK TRC carry, PEAK status words,
and the controller state an error counter implies (ISO 11898-1 fault confinement).

Everything here is pure: bytes in, an `ErrorInfo` out. Names are lower-case words so rules
can match them (`'ack' = ANY(classes)`, `'rx_passive' = ANY(controller)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CAN_ERR_FLAG = 0x20000000
CAN_EFF_FLAG = 0x80000000
CAN_RTR_FLAG = 0x40000000
CAN_ERR_MASK = 0x1FFFFFFF

# error class bits in the can_id of a Linux error frame (error.h)
ERR_CLASSES = (
    (0x001, "tx_timeout"),
    (0x002, "lost_arbitration"),
    (0x004, "controller"),
    (0x008, "protocol"),
    (0x010, "transceiver"),
    (0x020, "ack"),
    (0x040, "bus_off"),
    (0x080, "bus_error"),
    (0x100, "restarted"),
    (0x200, "counters"),
)
CAN_ERR_CRTL = 0x004
CAN_ERR_PROT = 0x008
CAN_ERR_TRX = 0x010
CAN_ERR_BUSOFF = 0x040
CAN_ERR_RESTARTED = 0x100
CAN_ERR_CNT = 0x200

# data[1]: controller status
CONTROLLER_BITS = (
    (0x01, "rx_overflow"),
    (0x02, "tx_overflow"),
    (0x04, "rx_warning"),
    (0x08, "tx_warning"),
    (0x10, "rx_passive"),
    (0x20, "tx_passive"),
    (0x40, "active"),
)
# data[2]: protocol violation type
PROTOCOL_BITS = (
    (0x01, "bit"),
    (0x02, "form"),
    (0x04, "stuff"),
    (0x08, "bit0"),
    (0x10, "bit1"),
    (0x20, "overload"),
    (0x40, "active"),
    (0x80, "tx"),
)
# data[3]: where in the frame (same codes as the SJA1000 ECC segment field)
LOCATIONS = {
    0x03: "sof",
    0x02: "id28_21",
    0x06: "id20_18",
    0x04: "srtr",
    0x05: "ide",
    0x07: "id17_13",
    0x0F: "id12_05",
    0x0E: "id04_00",
    0x0C: "rtr",
    0x0D: "res1",
    0x09: "res0",
    0x0B: "dlc",
    0x0A: "data",
    0x08: "crc_sequence",
    0x18: "crc_delimiter",
    0x19: "ack_slot",
    0x1B: "ack_delimiter",
    0x1A: "eof",
    0x12: "intermission",
    0x11: "active_error_flag",
    0x16: "passive_error_flag",
    0x13: "tolerate_dominant",
    0x17: "error_delimiter",
    0x1C: "overload_flag",
}
# data[4]: transceiver status
TRANSCEIVER = {
    0x04: "canh_no_wire",
    0x05: "canh_short_to_bat",
    0x06: "canh_short_to_vcc",
    0x07: "canh_short_to_gnd",
    0x40: "canl_no_wire",
    0x50: "canl_short_to_bat",
    0x60: "canl_short_to_vcc",
    0x70: "canl_short_to_gnd",
    0x80: "canl_short_to_canh",
}

WARNING_LIMIT = 96  # ISO 11898-1: error counters at 96 raise the warning flag
PASSIVE_LIMIT = 128  # error-passive from 128
BUS_OFF_LIMIT = 256  # TEC above 255 -> bus-off

# controller states, ordered by severity
STATES = ("error_active", "error_warning", "error_passive", "bus_off")


@dataclass
class ErrorInfo:
    """One decoded error record. `state` is the controller state it shows, or None."""

    classes: list[str] = field(default_factory=list)
    controller: list[str] = field(default_factory=list)
    protocol: list[str] = field(default_factory=list)
    location: str | None = None
    transceiver: str | None = None
    tx_errors: int | None = None
    rx_errors: int | None = None
    state: str | None = None


def _bits(value: int, table) -> list[str]:
    return [name for bit, name in table if value & bit]


def state_from_counters(tx: int | None, rx: int | None) -> str | None:
    """Controller state implied by the transmit/receive error counters (None if unknown)."""
    if tx is None and rx is None:
        return None
    worst = max(tx or 0, rx or 0)
    if (tx or 0) >= BUS_OFF_LIMIT:
        return "bus_off"
    if worst >= PASSIVE_LIMIT:
        return "error_passive"
    if worst >= WARNING_LIMIT:
        return "error_warning"
    return "error_active"


def decode_linux(can_id: int, data: bytes) -> ErrorInfo:
    """Decodes a SocketCAN error frame: class bits from the id, details from data[0..7]."""
    cls = can_id & CAN_ERR_MASK
    d = bytes(data) + bytes(8 - min(len(data), 8))
    info = ErrorInfo(classes=_bits(cls, ERR_CLASSES))
    if cls & CAN_ERR_CRTL:
        info.controller = _bits(d[1], CONTROLLER_BITS)
    if cls & CAN_ERR_PROT:
        info.protocol = _bits(d[2], PROTOCOL_BITS)
        info.location = LOCATIONS.get(d[3])
    if cls & CAN_ERR_TRX:
        info.transceiver = TRANSCEIVER.get(d[4])
    if cls & CAN_ERR_CNT:
        info.tx_errors, info.rx_errors = d[6], d[7]
    info.state = _linux_state(cls, info)
    return info


def _linux_state(cls: int, info: ErrorInfo) -> str | None:
    if cls & CAN_ERR_BUSOFF:
        return "bus_off"
    if cls & CAN_ERR_RESTARTED:
        return "restarted"
    ctl = set(info.controller)
    if ctl & {"rx_passive", "tx_passive"}:
        return "error_passive"
    if ctl & {"rx_warning", "tx_warning"}:
        return "error_warning"
    if "active" in ctl:
        return "error_active"
    return state_from_counters(info.tx_errors, info.rx_errors)


_SJA_TYPES = ("bit", "form", "stuff", "other")


def decode_sja1000_ecc(ecc: int) -> ErrorInfo:
    """Decodes an SJA1000 error code capture byte (bits 7-6 type, 5 direction, 4-0 segment).

    Vector BLF CAN_ERROR_EXT and PEAK hardware report bus errors this way.
    """
    kind = _SJA_TYPES[(ecc >> 6) & 0x3]
    info = ErrorInfo(classes=["protocol", "bus_error"])
    info.protocol = [] if kind == "other" else [kind]
    if not ecc & 0x20:
        info.protocol.append("tx")  # direction bit clear: error during transmission
    info.location = LOCATIONS.get(ecc & 0x1F)
    if info.location in ("ack_slot", "ack_delimiter"):
        info.classes.append("ack")
    return info


# PEAK PCAN status word (PCANBasic.h), as TRC 'Warng' (v1.x) and 'ST' (v2.x) lines carry it
PEAK_STATUS = (
    (0x00000004, "bus_light", "error_active"),  # below warning: bus error but still active
    (0x00000008, "bus_heavy", "error_warning"),
    (0x00040000, "bus_passive", "error_passive"),
    (0x00000010, "bus_off", "bus_off"),
)
PEAK_ERROR_TYPES = {1: "bit", 2: "form", 4: "stuff", 8: "other"}


def decode_peak_status(value: int) -> ErrorInfo:
    """Decodes a PEAK status word (e.g. 0x00000008 BUSHEAVY) into controller state."""
    info = ErrorInfo(classes=["controller"])
    state = "error_active" if value == 0 else None
    for bit, name, st in PEAK_STATUS:
        if value & bit:
            info.controller.append(name)
            if state is None or STATES.index(st) > STATES.index(state):
                state = st
    if state == "bus_off":
        info.classes.append("bus_off")
    info.state = state
    return info


def decode_peak_error(error_type: int, position: int, rx: int, tx: int) -> ErrorInfo:
    """Decodes a PEAK error frame (TRC 'Error' / 'ER'): type bits, bit position, counters."""
    info = ErrorInfo(classes=["protocol", "bus_error", "counters"])
    info.protocol = [n for b, n in PEAK_ERROR_TYPES.items() if error_type & b and n != "other"]
    info.location = LOCATIONS.get(position)
    if info.location in ("ack_slot", "ack_delimiter"):
        info.classes.append("ack")
    info.tx_errors, info.rx_errors = tx, rx
    info.state = state_from_counters(tx, rx)
    return info


_ASC_STATES = (
    ("bus off", "bus_off"),
    ("busoff", "bus_off"),
    ("passive", "error_passive"),
    ("warning", "error_warning"),
    ("active", "error_active"),
)


def decode_status_text(text: str, tx: int | None = None, rx: int | None = None) -> ErrorInfo:
    """Controller state from a status line's words (ASC 'chip status error passive')."""
    low = text.lower()
    info = ErrorInfo(classes=["controller"], tx_errors=tx, rx_errors=rx)
    for word, st in _ASC_STATES:
        if word in low:
            info.state = st
            break
    else:
        info.state = state_from_counters(tx, rx)
    if info.state == "bus_off":
        info.classes.append("bus_off")
    if tx is not None:
        info.classes.append("counters")
    return info
