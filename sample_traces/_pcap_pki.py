"""A small PKI for the TLS samples: a CSMS root CA, server certificates (valid, expired,
issued by a CA the charger does not know) and a charger client certificate.

Keys are EC P-256 (small captures); validity is fixed relative to `now` so a capture made
today shows the expired certificate as expired at capture time.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Charger Forensics Samples"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(subject, key, issuer, issuer_key, nb, na, ca=False, san=None, client=False, serial=0):
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in san]), False)
    if not ca:
        eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> str:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return str(path)


def make_pki(d: Path, host: str = "csms.test", now: dt.datetime | None = None) -> dict[str, str]:
    """Writes PEM files into d; returns their paths by role."""
    now = now or dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    ca_key, rogue_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    srv_key, cp_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _cert(
        "CSMS Root CA", ca_key, "CSMS Root CA", ca_key, now - 400 * day, now + 3650 * day, ca=True
    )
    rogue = _cert(
        "Other Root CA",
        rogue_key,
        "Other Root CA",
        rogue_key,
        now - 400 * day,
        now + 3650 * day,
        ca=True,
    )
    valid = _cert(
        host,
        srv_key,
        "CSMS Root CA",
        ca_key,
        now - 30 * day,
        now + 335 * day,
        san=[host],
        serial=0x1001,
    )
    expired = _cert(
        host,
        srv_key,
        "CSMS Root CA",
        ca_key,
        now - 400 * day,
        now - 35 * day,
        san=[host],
        serial=0x1002,
    )
    untrusted = _cert(
        host,
        srv_key,
        "Other Root CA",
        rogue_key,
        now - 30 * day,
        now + 335 * day,
        san=[host],
        serial=0x1003,
    )
    client = _cert(
        "CP-CLIENT",
        cp_key,
        "CSMS Root CA",
        ca_key,
        now - 30 * day,
        now + 335 * day,
        client=True,
        serial=0x2001,
    )
    d.mkdir(parents=True, exist_ok=True)
    return {
        "ca_cert": _write(d / "ca.pem", ca),
        "rogue_ca_cert": _write(d / "rogue_ca.pem", rogue),
        "server_key": _write(d / "server.key", key=srv_key),
        "server_cert": _write(d / "server.pem", valid),
        "expired_cert": _write(d / "server_expired.pem", expired),
        "untrusted_cert": _write(d / "server_untrusted.pem", untrusted),
        "client_key": _write(d / "client.key", key=cp_key),
        "client_cert": _write(d / "client.pem", client),
    }
