"""A throwaway PKI for tests and for ``dcoctl demo``.

Everything here is generated in memory with :mod:`cryptography` and returned
as PEM text. The certificates carry exactly the extensions stock OpenVPN
checks for ``remote-cert-tls server|client`` (key usage and extended key
usage), so they work against both ``/usr/sbin/openvpn`` and dcoctl.

Nothing here is meant for production use: keys are unencrypted and the CA
key lives next to the certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .protocol.statickey import StaticKey, format_static_key

__all__ = [
    "CA",
    "PKI",
    "Identity",
    "KeyType",
    "Role",
    "issue",
    "make_ca",
    "make_crl",
    "make_pki",
    "make_static_key",
    "write_pki",
]

KeyType = Literal["ec", "rsa"]
Role = Literal["server", "client"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_DEFAULT_LIFETIME = datetime.timedelta(days=365)
_BACKDATE = datetime.timedelta(days=1)


class CA(NamedTuple):
    """A certificate authority as PEM text: ``(cert_pem, key_pem)``."""

    cert_pem: str
    key_pem: str


@dataclass
class Identity:
    """A certificate and its private key, both PEM text."""

    cert_pem: str
    key_pem: str
    common_name: str
    serial: int
    role: Role

    def __repr__(self) -> str:
        # Keep private key material out of logs and tracebacks.
        return (
            f"Identity(common_name={self.common_name!r}, role={self.role!r}, serial={self.serial})"
        )


@dataclass
class PKI:
    """A CA, one server identity and any number of client identities."""

    ca_cert_pem: str
    ca_key_pem: str
    server: Identity
    clients: dict[str, Identity] = field(default_factory=dict)
    key_type: KeyType = "ec"

    def __repr__(self) -> str:
        return (
            f"PKI(server={self.server.common_name!r}, clients={sorted(self.clients)!r}, "
            f"key_type={self.key_type!r})"
        )

    @property
    def ca(self) -> CA:
        """The CA as a :class:`CA` tuple (what :func:`issue` and :func:`make_crl` take)."""
        return CA(self.ca_cert_pem, self.ca_key_pem)

    def issue_client(
        self,
        name: str,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Identity:
        """Return the client identity ``name``, issuing (and remembering) it if new."""
        existing = self.clients.get(name)
        if existing is not None and not_before is None and not_after is None:
            return existing
        ident = issue(
            self.ca,
            name,
            role="client",
            not_before=not_before,
            not_after=not_after,
            key_type=self.key_type,
        )
        self.clients[name] = ident
        return ident


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}")


def _key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _load_ca(ca: CA | tuple[str, str]) -> tuple[x509.Certificate, PrivateKey]:
    cert_pem, key_pem = ca
    cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("CA key must be an EC or RSA key")
    return cert, key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "dcoctl test CA", key_type: KeyType = "ec") -> CA:
    """Create a self-signed CA; returns ``(cert_pem, key_pem)`` as a :class:`CA`."""
    key = _new_key(key_type)
    now = _now()
    name = _name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), _key_pem(key))


def issue(
    ca: CA | tuple[str, str],
    cn: str,
    role: Role = "server",
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    key_type: KeyType = "ec",
) -> Identity:
    """Issue a certificate for ``cn`` signed by ``ca``.

    Server certificates get ``keyUsage=critical,digitalSignature,keyAgreement``
    (plus ``keyEncipherment`` for RSA), ``extendedKeyUsage=serverAuth`` and a
    DNS subjectAltName equal to ``cn`` (an IP SAN if ``cn`` is an address).
    Client certificates get ``digitalSignature`` (plus ``keyAgreement`` for EC,
    ``keyEncipherment`` for RSA) and ``extendedKeyUsage=clientAuth``.
    ``not_before``/``not_after`` default to yesterday and a year from now;
    pass past dates to make an expired certificate.
    """
    if role not in ("server", "client"):
        raise ValueError(f"unknown role {role!r}")
    ca_cert, ca_key = _load_ca(ca)
    key = _new_key(key_type)
    now = _now()
    start = not_before if not_before is not None else now - _BACKDATE
    end = not_after if not_after is not None else now + _DEFAULT_LIFETIME
    is_rsa = key_type == "rsa"
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=not is_rsa or role == "server",
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    eku = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if role == "server":
        san: x509.GeneralName
        try:
            san = x509.IPAddress(ipaddress.ip_address(cn))
        except ValueError:
            san = x509.DNSName(cn)
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Identity(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key_pem=_key_pem(key),
        common_name=cn,
        serial=serial,
        role=role,
    )


def make_crl(
    ca: CA | tuple[str, str],
    revoked_serials: Iterable[int],
    next_update: datetime.timedelta = datetime.timedelta(days=30),
) -> str:
    """A PEM CRL signed by ``ca`` revoking ``revoked_serials`` (may be empty)."""
    ca_cert, ca_key = _load_ca(ca)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + next_update)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - datetime.timedelta(minutes=1))
            .build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def make_static_key() -> str:
    """A fresh ``OpenVPN Static key V1`` file text (for tls-auth / tls-crypt)."""
    return format_static_key(StaticKey(os.urandom(256)))


def make_pki(
    server_cn: str = "server",
    clients: Iterable[str] = ("client",),
    key_type: KeyType = "ec",
    ca_cn: str = "dcoctl test CA",
) -> PKI:
    """A CA, a server identity ``server_cn`` and one client identity per name."""
    ca = make_ca(ca_cn, key_type)
    server = issue(ca, server_cn, role="server", key_type=key_type)
    pki = PKI(ca.cert_pem, ca.key_pem, server, {}, key_type)
    for name in clients:
        pki.issue_client(name)
    return pki


def _write(path: Path, text: str, secret: bool) -> Path:
    mode = 0o600 if secret else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
    os.chmod(path, mode)
    return path


def write_pki(pki: PKI, directory: Path | str) -> dict[str, Path]:
    """Write ``pki`` into ``directory`` (created if missing).

    Files: ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key`` and
    ``client-<name>.crt`` / ``client-<name>.key`` per client. Private keys get
    mode 0600. Returns a mapping from those file names to their paths.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def put(name: str, text: str, secret: bool) -> None:
        files[name] = _write(out / name, text, secret)

    put("ca.crt", pki.ca_cert_pem, False)
    put("ca.key", pki.ca_key_pem, True)
    put("server.crt", pki.server.cert_pem, False)
    put("server.key", pki.server.key_pem, True)
    for name, ident in pki.clients.items():
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"client name {name!r} cannot be a file name")
        put(f"client-{name}.crt", ident.cert_pem, False)
        put(f"client-{name}.key", ident.key_pem, True)
    return files
