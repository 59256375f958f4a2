"""OCPP 1.6 / 2.0.1 action sets and JSON-schema validation, from the `ocpp` package's
official schema files (never hand-written).

Validation is deduplicated: payloads are canonicalised in SQL first (CANONICAL_SQL) and each
distinct canonical payload is validated once; canonical forms that fail are validated again
on their original payloads, so a verdict of "invalid" is always about the real message.
`format` is not checked, as the ocpp library does not.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

from jsonschema import Draft4Validator, Draft7Validator

VERSIONS = ("1.6", "2.0.1")

# Actions the charging station sends (the rest are sent by the CSMS); DataTransfer both ways.
CP_INITIATED = frozenset(
    [
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
        "ClearedChargingLimit",
        "LogStatusNotification",
        "NotifyChargingLimit",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule",
        "NotifyEvent",
        "NotifyMonitoringReport",
        "NotifyReport",
        "PublishFirmwareStatusNotification",
        "ReportChargingProfiles",
        "ReservationStatusUpdate",
        "SecurityEventNotification",
        "SignCertificate",
        "TransactionEvent",
        "Get15118EVCertificate",
        "GetCertificateStatus",
    ]
)


def _schema_dir(version: str):
    # Reached through the top package: files("ocpp.v201") would import ocpp.v201 and its
    # dataclasses (~0.15 s per process) only to list JSON files.
    sub = {"1.6": "v16", "2.0.1": "v201"}[version]
    return files("ocpp") / sub / "schemas"


@cache
def actions(version: str) -> frozenset[str]:
    """Action names defined by a version's schema files."""
    names = set()
    for entry in _schema_dir(version).iterdir():
        stem = entry.name.removesuffix(".json")
        if stem.endswith("Response"):
            continue
        names.add(stem.removesuffix("Request") if version != "1.6" else stem)
    return frozenset(names)


@cache
def only_in(version: str) -> frozenset[str]:
    """Actions that exist in this version and not in the other."""
    other = next(v for v in VERSIONS if v != version)
    return actions(version) - actions(other)


@cache
def _validator(version: str, action: str, response: bool):
    name = action + ("Response" if response else ("" if version == "1.6" else "Request"))
    path = _schema_dir(version) / f"{name}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = Draft4Validator if "draft-04" in schema.get("$schema", "") else Draft7Validator
    return cls(schema)


def validate(version: str | None, action: str | None, response: bool, payload: str):
    """(valid, error, version_used) for one payload; version None tries 1.6 then 2.0.1.

    valid is None when no schema applies (no action known for an unpaired result).
    """
    if not action:
        return None, None, version
    try:
        doc = json.loads(payload)
    except (TypeError, ValueError):
        return False, "payload is not JSON", version
    tried = [version] if version else list(VERSIONS)
    errors = []
    for v in tried:
        validator = _validator(v, action, response)
        if validator is None:
            errors.append(f"unknown action {action} in OCPP {v}")
            continue
        err = next(iter(validator.iter_errors(doc)), None)
        if err is None:
            return True, None, v
        where = "/".join(str(p) for p in err.absolute_path) or "payload"
        errors.append(f"OCPP {v} {action}{'Response' if response else ''}: {where}: {err.message}")
    return False, "; ".join(errors)[:400], version


# SQL canonicalising a payload for deduplicated validation: RFC 3339 stamps, short digit
# strings, large numbers and fractional parts are replaced by representatives. The OCPP
# schemas constrain these only by type, `minimum: 0` and `maximum: 100`, which the forms
# keep (sign, zero and values below 1000 stay). A form that fails is re-checked on the
# original payloads, so "invalid" is always about the real message. (A one-pass
# translate() of digits was tried: 25 % cheaper in SQL but 15x more distinct forms.)
CANONICAL_SQL = r"""regexp_replace(regexp_replace(regexp_replace(regexp_replace(
    {p},
    '"\d{{4}}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?"', '"2000-01-01T00:00:00Z"', 'g'),
    '"-?\d{{1,9}}(\.\d+)?"', '"1"', 'g'),
    '([:,\[]\s*)(-?)\d{{4,}}(\.\d+)?(\s*[,}}\]])', '\1\21000\4', 'g'),
    '([:,\[]\s*)(-?\d{{1,3}})\.\d+(\s*[,}}\]])', '\1\2.5\3', 'g')"""


def canonical_sql(payload_expr: str) -> str:
    return CANONICAL_SQL.format(p=payload_expr)
