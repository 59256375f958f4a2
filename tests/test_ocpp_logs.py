"""OCPP log parsers (JSON Lines and text) through real ingest into a real case database."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import rows

BOOT = [2, "b1", "BootNotification", {"chargePointVendor": "ABB", "chargePointModel": "Terra"}]
BOOT_OK = [3, "b1", {"status": "Accepted", "currentTime": "2026-06-01T12:00:00Z", "interval": 60}]


def jl(ts, frame=None, cp="CP-1", direction=None, **extra):
    doc = {"ts": ts, "charger_id": cp, **extra}
    if frame is not None:
        doc["frame"] = frame
    if direction:
        doc["direction"] = direction
    return json.dumps(doc)


def test_jsonl_pairs_validates_and_counts(ingest_files):
    lines = [
        jl("2026-06-01T12:00:00.000Z", BOOT, direction="cp_to_csms"),
        jl("2026-06-01T12:00:00.250Z", BOOT_OK, direction="csms_to_cp"),
        "not json at all",
        jl("2026-06-01T12:00:10Z", [2, "h1", "Heartbeat", {}]),
        jl("2026-06-01T12:00:10.100Z", [3, "h1", {"currentTime": "bad-but-a-string"}]),
        jl("2026-06-01T12:00:11Z", [2, "x1", "StatusNotification", {"connectorId": 1}]),
        jl("2026-06-01T12:00:12Z", [9, "x2"]),
        jl("2026-06-01T12:00:13Z", [4, "x1", "InternalError", "boom", {}]),
        jl("2026-06-01T12:01:00Z", event="disconnected", code=1006),
    ]
    report, con = ingest_files({"csms.jsonl": "\n".join(lines) + "\n"})
    assert (report.records, report.rejects) == (7, 2)
    assert rows(con, "SELECT locator, reason FROM rejects ORDER BY locator") == [
        ("line 3", "jsonl.not_json"),
        ("line 7", "ocpp.bad_message_type"),
    ]
    boot = rows(con, "SELECT response_ms, ocpp_version, schema_valid FROM ocpp_messages "
                "WHERE action = 'BootNotification' AND message_type = 2")  # fmt: skip
    assert boot == [(250.0, "1.6", True)]
    # Direction of an unlabelled CALL follows from its action; its result goes the other way.
    assert rows(con, "SELECT direction FROM ocpp_messages WHERE unique_id = 'h1' "
                "ORDER BY message_type") == [("cp_to_csms",), ("csms_to_cp",)]  # fmt: skip
    # StatusNotification lacks required errorCode/status: a schema violation, still stored.
    bad = rows(con, "SELECT schema_valid, schema_error FROM ocpp_messages WHERE unique_id='x1' "
               "AND message_type = 2")  # fmt: skip
    assert bad[0][0] is False and "required" in bad[0][1]
    kinds = dict(rows(con, "SELECT kind, count(*) FROM events GROUP BY kind"))
    assert kinds == {
        "ocpp.boot": 1, "ocpp.boot_accepted": 1, "ocpp.call": 2, "ocpp.result": 1,
        "ocpp.callerror": 1, "ocpp.schema_violation": 1, "ws.disconnect": 1,
    }  # fmt: skip
    ev = rows(con, "SELECT record_count FROM (SELECT records_parsed + records_rejected "
              "AS record_count FROM evidence)")  # fmt: skip
    assert ev == [(9,)]


def test_jsonl_local_time_uses_manifest_timezone(ingest_files):
    log = jl("2026-06-01 14:00:00", [2, "h", "Heartbeat", {}]) + "\n"
    manifest = '[case]\nid = "T-1"\ntimezone = "Europe/Berlin"\n'
    _, con = ingest_files({"a.jsonl": log, "manifest.toml": manifest})
    assert str(rows(con, "SELECT ts FROM ocpp_messages")[0][0]) == "2026-06-01 12:00:00"


def test_clock_jump_is_an_event(ingest_files):
    lines = [
        jl("2026-06-01T12:00:00Z", [2, "a", "Heartbeat", {}]),
        jl("1970-01-01T00:00:05Z", [2, "b", "Heartbeat", {}]),
        jl("1970-01-01T00:01:05Z", [2, "c", "Heartbeat", {}]),
        jl("2026-06-01T12:05:00Z", [2, "d", "Heartbeat", {}]),
        jl("2026-06-01T12:04:00Z", [2, "e", "Heartbeat", {}]),
    ]
    _, con = ingest_files({"a.jsonl": "\n".join(lines)})
    jumps = rows(con, "SELECT locator, code FROM events WHERE kind = 'clock.jump' ORDER BY locator")
    assert jumps == [("line 2", "rtc_reset"), ("line 4", "rtc_reset"), ("line 5", "backwards")]


def test_invalid_utf8_and_utf16_are_read(ingest_files):
    good = jl("2026-06-01T12:00:00Z", [2, "a", "DataTransfer", {"vendorId": "X", "data": "M"}])
    latin1 = good.replace('"M"', '"M\u00fcller"').encode("latin-1")
    data = latin1 + b"\n" + jl("2026-06-01T12:00:01Z", [2, "b", "Heartbeat", {}]).encode() + b"\n"
    utf16 = ("\n".join([good, good.replace('"a"', '"z"')]) + "\n").encode("utf-16")
    report, con = ingest_files({"latin.jsonl": data, "wide.jsonl": utf16})
    assert report.rejects == 0 and report.records == 4
    notes = dict(rows(con, "SELECT path, notes FROM evidence"))
    assert "not UTF-8" in notes["latin.jsonl"][0] and "line 1" in notes["latin.jsonl"][0]
    assert notes["wide.jsonl"] == ["decoded from UTF-16"]


def test_text_log_csms_side_with_ids_and_lifecycle(ingest_files):
    log = "\n".join([
        "2026-06-01 12:00:00.100 INFO Handler - [chargeBoxId=CP-7] New connection established",
        '2026-06-01 12:00:00.200 DEBUG Ws - [chargeBoxId=CP-7] Received: [2,"1","Heartbeat",{}]',
        '2026-06-01 12:00:00.260 DEBUG Ws - [chargeBoxId=CP-7] Sending: [3,"1",{"currentTime":"2026-06-01T12:00:00Z"}]',
        "2026-06-01 12:00:00.300 DEBUG pool stats",
        '2026-06-01 12:00:01.000 DEBUG Ws - [chargeBoxId=CP-7] Received: [2,"2","Heartbeat",{}',
        "2026-06-01 12:00:05.000 INFO Handler - [chargeBoxId=CP-7] connection closed, code 1006",
    ])  # fmt: skip
    report, con = ingest_files({"steve.log": log})
    assert (report.records, report.rejects) == (4, 1)
    assert rows(con, "SELECT locator, reason FROM rejects") == [("line 5", "ocpp.not_json")]
    assert rows(con, "SELECT direction, response_ms FROM ocpp_messages ORDER BY seq") == [
        ("cp_to_csms", 60.0),
        ("csms_to_cp", None),
    ]
    assert rows(con, "SELECT kind, code FROM events WHERE layer = 'websocket' ORDER BY ts") == [
        ("ws.connect", None),
        ("ws.disconnect", "1006"),
    ]


def test_garbage_file_is_unrecognised_not_crashed(ingest_files):
    report, con = ingest_files({"capture.pcap": b"\x00\x01garbage" * 100, "notes.txt": "hello\n"})
    assert sorted(report.unrecognised) == ["capture.pcap", "notes.txt"]
    assert rows(con, "SELECT status FROM evidence ORDER BY path") == [("unrecognised",)] * 2


def test_jsonl_that_is_all_bad_gives_up(ingest_files):
    lines = ['{"ts": "x", "frame": "nope"}'] * 30
    report, con = ingest_files({"bad.jsonl": "\n".join(lines)})
    assert report.unrecognised == ["bad.jsonl"]
    assert rows(con, "SELECT count(*) FROM ocpp_messages") == [(0,)]
    assert "does not look like this format" in rows(con, "SELECT message FROM evidence")[0][0]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(st.binary(max_size=60), st.just(jl("2026-06-01T12:00:00Z", BOOT).encode())),
        max_size=12,
    )
)
def test_any_bytes_never_crash_and_counts_add_up(ingest_files, chunks):
    data = b"\n".join(chunks)
    header = jl("2026-06-01T12:00:00Z", [2, "h", "Heartbeat", {}]).encode()
    report, con = ingest_files({"fuzz.jsonl": header + b"\n" + header + b"\n" + data})
    assert not report.failed
    parsed, rejected = rows(con, "SELECT records_parsed, records_rejected FROM evidence")[0]
    seen = rows(con, "SELECT count(*) FROM ocpp_messages")[0][0] + rows(
        con, "SELECT count(*) FROM events WHERE layer = 'websocket'")[0][0]  # fmt: skip
    assert parsed == seen
    assert rejected == rows(con, "SELECT count(*) FROM rejects")[0][0]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(max_size=80), max_size=10))
def test_text_log_any_lines_never_crash(ingest_files, noise):
    head = [
        '2026-06-01 12:00:00.200 DEBUG [chargeBoxId=CP-7] Received: [2,"1","Heartbeat",{}]',
        '2026-06-01 12:00:00.300 DEBUG [chargeBoxId=CP-7] Sending: [3,"1",{"currentTime":"x"}]',
    ]
    text = "\n".join(head + [n.replace("\r", " ") for n in noise])
    report, con = ingest_files({"csms.log": text})
    assert not report.failed
    parsed, rejected = rows(con, "SELECT records_parsed, records_rejected FROM evidence")[0]
    stored = rows(con, "SELECT count(*) FROM ocpp_messages")[0][0]
    lifecycle = rows(con, "SELECT count(*) FROM events WHERE layer = 'websocket'")[0][0]
    assert (
        parsed == stored + lifecycle and rejected == rows(con, "SELECT count(*) FROM rejects")[0][0]
    )


def test_reused_unique_ids_pair_with_the_latest_call(ingest_files):
    lines = []
    for n in range(3):  # a charger that numbers every message "1"
        lines.append(jl(f"2026-06-01T12:0{n}:00.000Z", [2, "1", "Heartbeat", {}]))
        lines.append(
            jl(f"2026-06-01T12:0{n}:00.{100 * (n + 1):03d}Z", [3, "1", {"currentTime": "x"}])
        )
    lines.append(jl("2026-06-01T12:05:00Z", [3, "1", {"currentTime": "x"}]))  # a stray duplicate
    _, con = ingest_files({"a.jsonl": "\n".join(lines)})
    assert rows(con, "SELECT seq, response_ms FROM ocpp_messages WHERE message_type = 2 "
                "ORDER BY seq") == [(1, 100.0), (3, 200.0), (5, 300.0)]  # fmt: skip
    assert rows(con, "SELECT count(*) FROM ocpp_messages WHERE action = 'Heartbeat'") == [(7,)]


def test_clean_close_is_not_a_disconnect(ingest_files):
    lines = [
        jl("2026-06-01T12:00:00Z", event="disconnected", code=1000),
        jl("2026-06-01T12:01:00Z", event="disconnected", code=1006),
        jl("2026-06-01T12:02:00Z", event="disconnected"),
    ]
    _, con = ingest_files({"a.jsonl": "\n".join(lines)})
    assert rows(con, "SELECT kind, severity FROM events ORDER BY ts") == [
        ("ws.close", "info"),
        ("ws.disconnect", "warning"),
        ("ws.disconnect", "warning"),
    ]


def test_enum_with_digits_is_judged_on_the_original(ingest_files):
    def meter(uid, phase):
        sv = {"value": "230.1", "measurand": "Voltage", "phase": phase, "unit": "V"}
        payload = {
            "connectorId": 1,
            "meterValue": [{"timestamp": "2026-06-01T12:00:00Z", "sampledValue": [sv]}],
        }
        return jl("2026-06-01T12:00:00Z", [2, uid, "MeterValues", payload])

    # "L3-L1" canonicalises to the invalid "L1-L1"; "L2-L2" is invalid for real.
    _, con = ingest_files({"m.jsonl": "\n".join([meter("a", "L3-L1"), meter("b", "L2-L2")])})
    got = rows(con, "SELECT unique_id, schema_valid, schema_error FROM ocpp_messages ORDER BY 1")
    assert got[0][:2] == ("a", True) and got[0][2] is None
    assert got[1][:2] == ("b", False) and "'L2-L2' is not one of" in got[1][2]


def _pairing_reference(msgs):
    """The pairing rules, message by message: a result belongs to the latest earlier CALL of
    its charger and unique id (its action, and the opposite of that CALL's direction unless
    it has its own); a CALL's latency is to the next message of its charger and unique id
    when that is a result. Returns (action, direction, response_ms) per message."""
    from forensics.parsers._ocpp_schemas import CP_INITIATED

    flip = {"cp_to_csms": "csms_to_cp", "csms_to_cp": "cp_to_csms", None: None}
    last_call, out = {}, []
    for i, (cp, mt, uid, action, direction, ms) in enumerate(msgs):
        key = (cp, uid)
        if mt == 2:
            own = direction or (
                None if action == "DataTransfer"
                else "cp_to_csms" if action in CP_INITIATED else "csms_to_cp"
            )  # fmt: skip
            after = next((m for m in msgs[i + 1 :] if (m[0], m[2]) == key), None)
            latency = after[5] - ms if after is not None and after[1] != 2 else None
            out.append((action, own, None if latency is None else float(latency)))
            last_call[key] = (action, own)
        else:
            call_action, call_dir = last_call.get(key, (None, None))
            out.append((call_action, direction or flip[call_dir], None))
    return out


MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(["CP-1", "CP-2"]),
        st.sampled_from([2, 2, 3, 4]),
        st.sampled_from(["1", "2", "3"]),
        st.sampled_from(
            ["Heartbeat", "DataTransfer", "RemoteStartTransaction", "StatusNotification"]
        ),
        st.sampled_from([None, None, "cp_to_csms", "csms_to_cp"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(MESSAGES)
def test_pairing_follows_the_rules_message_by_message(ingest_files, spec):
    """CALLs, CALLRESULTs and CALLERRORs of two chargers reusing three ids, in any order,
    some with a direction of their own: the close pairs them as the rules say (latest
    earlier CALL; latency to the next message when it is a result)."""
    msgs, lines = [], []
    for i, (cp, mt, uid, action, direction) in enumerate(spec):
        ms = 1000 * i + 7 * (i % 5)
        ts = f"2026-06-01T12:00:{ms // 1000:02d}.{ms % 1000:03d}Z"
        frame = {2: [2, uid, action, {}], 3: [3, uid, {}], 4: [4, uid, "InternalError", "", {}]}
        lines.append(jl(ts, frame[mt], cp=cp, direction=direction))
        msgs.append((cp, mt, uid, action if mt == 2 else None, direction, ms))
    _, con = ingest_files({"a.jsonl": "\n".join(lines)})
    got = rows(con, "SELECT action, direction, response_ms FROM ocpp_messages ORDER BY seq")
    assert got == _pairing_reference(msgs)


def shape_of(frame) -> str | None:
    """The OCPP-J frame rules (OCPP-J 1.6 section 4, 2.0.1 part 4 section 4), one frame:
    the reject reason the close gives it, None when it is a message."""
    if not isinstance(frame, list) or not frame:
        return "ocpp.not_array"
    mt = frame[0]
    if type(mt) is not int or mt not in (2, 3, 4):
        return "ocpp.bad_message_type"
    kinds = {2: (str, str, dict), 3: (str, dict), 4: (str, str, str, dict)}[mt]
    rest = frame[1:]
    if len(rest) != len(kinds) or not all(type(v) is t for v, t in zip(rest, kinds, strict=True)):
        return "ocpp.bad_frame"
    return None


JSON_VALUES = st.one_of(
    st.sampled_from([2, 3, 4, 5, -1, 0]),
    st.text(max_size=6),
    st.dictionaries(st.text(max_size=4), st.integers(0, 9) | st.text(max_size=4), max_size=2),
    st.lists(st.integers(0, 9), max_size=2),
    st.sampled_from([None, True, False, 2.5]),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.lists(JSON_VALUES, max_size=7), JSON_VALUES),
            st.sampled_from([None, 0, 2]),  # layout: compact, one element a line, indented
        ),
        min_size=1,
        max_size=25,
    )
)
@example(
    [
        ([3, "a", []], 0), ([3, "a", "x"], None), ([3, 7, {}], None), ([3, "a", {}, 1], None),
        ([2, "a", "Heartbeat", []], None), ([2, "a", 5, {}], 2), ([2, "a", "X"], None),
        ([4, "a", "E", "d", {}], 0), ([4, "a", "E", 1, {}], None), ([4, "a", "E", "d", 1], None),
        ([4, "a", "E", "d", {}, 1], None), ([], None), ({"a": 1}, None), ("x", None),
        ([2.5, "a", {}], None), (["3", "a", {}], None), ([None], None), ([3, None, {}], None),
    ]
)  # fmt: skip
def test_frame_shapes_are_judged_as_the_rules_say(ingest_files, frames):
    """Each frame's verdict (a message, or which reject) is what the rules give it, however
    its JSON is laid out, whatever the types of its elements."""
    # a file of nothing but bad frames is no OCPP log at all: two good ones open it
    lines = [jl("2026-06-01T11:59:00Z", [2, "h", "Heartbeat", {}])] * 2
    want = {"line 1": None, "line 2": None}
    for i, (frame, indent) in enumerate(frames, start=3):
        text = json.dumps(frame, indent=indent) if indent is not None else json.dumps(frame)
        text = text.replace(", ", ",") if indent is None else text
        lines.append(jl(f"2026-06-01T12:00:{i:02d}Z", text))
        want[f"line {i}"] = shape_of(frame)
    _, con = ingest_files({"shapes.jsonl": "\n".join(lines)})
    got = dict.fromkeys(want)
    got.update(dict(rows(con, "SELECT locator, reason FROM rejects")))
    stored = rows(con, "SELECT count(*) FROM ocpp_messages")[0][0]
    assert got == want
    assert stored == sum(v is None for v in want.values())
