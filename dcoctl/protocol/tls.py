"""TLS over memory buffers for the control channel (reference A.8, D.2, J.5).

OpenVPN tunnels a TLS byte stream inside its control packets, so TLS here
never touches a socket: ciphertext goes in with :meth:`TLSEngine.feed` and out
with :meth:`TLSEngine.outgoing`. pyOpenSSL is used instead of the stdlib
``ssl`` module because only it exposes RFC 5705 keying-material export, which
OpenVPN 2.6+ uses to derive data-channel keys.

Peer verification follows OpenVPN: chain to the configured CA, then
``remote-cert-tls`` (key usage + extended key usage) and ``verify-x509-name``
on the leaf. Failures are collected as human-readable reasons so the user
sees *why* ("certificate signed by an unknown CA", "CN=evil does not match").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto

from ..errors import AuthenticationError, ConfigError

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_TLS_VERSIONS = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}
EKM_LABEL_DATAKEYS = b"EXPORTER-OpenVPN-datakeys"


@dataclass(frozen=True)
class TLSSettings:
    """Everything needed to build TLS contexts for one side of the tunnel."""

    ca_pem: str
    cert_pem: str | None = None
    key_pem: str | None = None
    pkcs12: bytes | None = None
    extra_certs_pem: str | None = None
    #: ``remote-cert-tls``: "server" or "client" (what the *peer* must be).
    remote_cert_tls: str | None = None
    #: ``verify-x509-name``: (name, "subject" | "name" | "name-prefix").
    verify_x509_name: tuple[str, str] | None = None
    tls_version_min: str = "1.2"
    tls_version_max: str | None = None
    tls_cipher: str | None = None
    tls_ciphersuites: str | None = None
    tls_groups: str | None = None
    #: Server side: ``verify-client-cert none|optional|require``.
    verify_client_cert: str = "require"
    #: ``crl-verify``: PEM CRL(s) of the CA; revoked peers fail verification.
    crl_pem: str | None = None


def load_certificates(pem: str, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; a bundle without one is an error."""
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise ConfigError(f"{what}: no PEM certificate found")
    try:
        return [x509.load_pem_x509_certificate(b.encode()) for b in blocks]
    except ValueError as exc:
        raise ConfigError(f"{what}: unreadable certificate ({exc})") from None


def describe_subject(cert: x509.Certificate) -> str:
    """Subject in OpenVPN's ``C=.., O=.., CN=..`` style for messages."""
    return cert.subject.rfc4514_string()


def _common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def check_remote_cert_tls(cert: x509.Certificate, role: str) -> str | None:
    """OpenVPN's ``remote-cert-tls`` check; returns a failure reason or None.

    "server" requires key usage digitalSignature or keyAgreement (as 2.6
    accepts) and EKU TLS Web Server Authentication; "client" the clientAuth
    counterpart.
    """
    wanted = "server"
    eku_oid = ExtendedKeyUsageOID.SERVER_AUTH
    if role != wanted:
        eku_oid = ExtendedKeyUsageOID.CLIENT_AUTH
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return f"certificate has no key usage extension (remote-cert-tls {role})"
    if not (ku.digital_signature or ku.key_agreement or ku.key_encipherment):
        return f"certificate key usage does not allow TLS (remote-cert-tls {role})"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return f"certificate has no extended key usage (remote-cert-tls {role})"
    if eku_oid not in eku:
        return f"certificate is not a TLS {role} certificate (remote-cert-tls {role})"
    return None


def check_x509_name(cert: x509.Certificate, name: str, kind: str) -> str | None:
    """OpenVPN's ``verify-x509-name``; returns a failure reason or None."""
    cn = _common_name(cert) or ""
    if kind == "name":
        ok = cn == name
        got = f"CN={cn}"
    elif kind == "name-prefix":
        ok = cn.startswith(name)
        got = f"CN={cn}"
    else:
        # "subject": OpenVPN compares its own "C=.., O=.., CN=.." rendering;
        # accept that or the RFC 4514 form, in either attribute order.
        parts = [f"{a.rfc4514_attribute_name}={a.value!s}" for a in cert.subject]
        candidates = {
            ", ".join(parts),
            ",".join(parts),
            describe_subject(cert),
            ", ".join(reversed(parts)),
        }
        ok = name in candidates
        got = ", ".join(parts)
    if ok:
        return None
    return f"verify-x509-name: expected {kind} '{name}', server certificate has '{got}'"


class TLSEngine:
    """One TLS connection (one key state) over memory BIOs."""

    def __init__(self, settings: TLSSettings, *, server: bool) -> None:
        self._settings = settings
        self._server = server
        self._failure: str | None = None
        self.peer_certificate: x509.Certificate | None = None
        ctx = build_context(settings, server=server, on_verify=self._verify)
        self._conn = SSL.Connection(ctx, None)
        if server:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
        self.handshake_done = False

    # -- verification -------------------------------------------------------
    def _verify(
        self, _conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        if not ok:
            subject = describe_subject(cert.to_cryptography())
            message = _X509_ERRORS.get(errno, f"X509 verify error {errno}")
            self._failure = f"certificate '{subject}' (depth {depth}): {message}"
            return False
        if depth == 0:
            leaf = cert.to_cryptography()
            role = self._settings.remote_cert_tls
            problem = check_remote_cert_tls(leaf, role) if role else None
            if problem is None and self._settings.verify_x509_name and not self._server:
                problem = check_x509_name(leaf, *self._settings.verify_x509_name)
            if problem is not None:
                self._failure = problem
                return False
            self.peer_certificate = leaf
        return True

    # -- byte pumps ---------------------------------------------------------
    def feed(self, ciphertext: bytes) -> None:
        """Hand TLS records received from the peer to OpenSSL."""
        # Empty control packets are legal (CONTROL_WKC_V1, A.6); OpenSSL's
        # BIO_write refuses zero bytes, so skip them.
        if ciphertext:
            self._conn.bio_write(ciphertext)

    def outgoing(self) -> bytes:
        """TLS records OpenSSL wants sent to the peer (possibly empty)."""
        chunks = []
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def progress(self) -> bytes:
        """Advance the handshake and return any decrypted application data.

        Raises :class:`AuthenticationError` when the peer fails verification
        or the handshake fails.
        """
        if not self.handshake_done:
            try:
                self._conn.do_handshake()
            except SSL.WantReadError:
                return b""
            except SSL.Error as exc:
                raise AuthenticationError(self._explain(exc)) from None
            self.handshake_done = True
        data = []
        while True:
            try:
                chunk = self._conn.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                break
            except SSL.Error as exc:
                raise AuthenticationError(self._explain(exc)) from None
            if not chunk:
                break
            data.append(chunk)
        return b"".join(data)

    def write(self, plaintext: bytes) -> None:
        """Send application data (key-method message, control strings)."""
        self._conn.sendall(plaintext)

    def _explain(self, exc: SSL.Error) -> str:
        if self._failure:
            return f"TLS verification failed: {self._failure}"
        details = []
        for err in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
            if isinstance(err, tuple) and len(err) == 3:
                details.append(str(err[2]))
        return "TLS handshake failed: " + (", ".join(details) or str(exc))

    # -- keying -------------------------------------------------------------
    def export_keying_material(self, label: bytes, length: int) -> bytes:
        """RFC 5705 exporter with *no* context, as OpenVPN calls it (D.2)."""
        return bytes(self._conn.export_keying_material(label, length, None))

    @property
    def version(self) -> str:
        """Negotiated protocol version, e.g. ``TLSv1.3``."""
        return str(self._conn.get_protocol_version_name())

    @property
    def cipher(self) -> str:
        """Negotiated TLS cipher suite name."""
        return str(self._conn.get_cipher_name())


VerifyCallback = Callable[[SSL.Connection, crypto.X509, int, int, int], bool]


def _store(ctx: SSL.Context) -> crypto.X509Store:
    store = ctx.get_cert_store()
    if store is None:  # only happens for contexts without a store, never here
        raise RuntimeError("OpenSSL context has no certificate store")
    return store


def build_context(settings: TLSSettings, *, server: bool, on_verify: VerifyCallback) -> SSL.Context:
    """Create an OpenSSL context from ``settings`` (raises ConfigError)."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    try:
        ctx.set_min_proto_version(_TLS_VERSIONS[settings.tls_version_min])
        if settings.tls_version_max:
            ctx.set_max_proto_version(_TLS_VERSIONS[settings.tls_version_max])
    except KeyError as exc:
        raise ConfigError(f"unsupported TLS version {exc.args[0]}") from None
    store = _store(ctx)
    for cert in load_certificates(settings.ca_pem, "ca"):
        store.add_cert(crypto.X509.from_cryptography(cert))
    _load_identity(ctx, settings)
    try:
        if settings.tls_cipher:
            ctx.set_cipher_list(settings.tls_cipher.encode())
        if settings.tls_ciphersuites and hasattr(ctx, "set_tls13_ciphersuites"):
            ctx.set_tls13_ciphersuites(settings.tls_ciphersuites.encode())
    except SSL.Error as exc:
        raise ConfigError(f"invalid tls-cipher/tls-ciphersuites: {exc}") from None
    if settings.crl_pem:
        for block in re.findall(
            r"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", settings.crl_pem, re.DOTALL
        ):
            try:
                store.add_crl(x509.load_pem_x509_crl(block.encode()))
            except ValueError as exc:
                raise ConfigError(f"crl-verify: unreadable CRL ({exc})") from None
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
    mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    if server and settings.verify_client_cert == "optional":
        mode = SSL.VERIFY_PEER
    elif server and settings.verify_client_cert == "none":
        mode = SSL.VERIFY_NONE
    ctx.set_verify(mode, on_verify)
    # A renegotiation is a brand-new TLS session in OpenVPN: no tickets needed.
    ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


def _load_identity(ctx: SSL.Context, settings: TLSSettings) -> None:
    if settings.pkcs12 is not None:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(settings.pkcs12, None)
        except ValueError as exc:
            raise ConfigError(
                f"pkcs12: cannot read ({exc}); encrypted bundles are not supported"
            ) from None
        if key is None or cert is None:
            raise ConfigError("pkcs12: bundle lacks a certificate or private key")
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)  # type: ignore[arg-type]
        for extra_cert in extra:
            ctx.add_extra_chain_cert(extra_cert)
            _store(ctx).add_cert(crypto.X509.from_cryptography(extra_cert))
        return
    if settings.cert_pem is None or settings.key_pem is None:
        return
    certs = load_certificates(settings.cert_pem, "cert")
    try:
        key = serialization.load_pem_private_key(settings.key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"key: unreadable or encrypted private key ({exc})") from None
    ctx.use_certificate(certs[0])
    ctx.use_privatekey(key)  # type: ignore[arg-type]
    for chain_cert in certs[1:]:
        ctx.add_extra_chain_cert(chain_cert)
    if settings.extra_certs_pem:
        for chain_cert in load_certificates(settings.extra_certs_pem, "extra-certs"):
            ctx.add_extra_chain_cert(chain_cert)
    try:
        ctx.check_privatekey()
    except SSL.Error:
        raise ConfigError("key does not match the certificate in 'cert'") from None


# The X509_V_ERR_* codes users actually meet, in words they understand.
_X509_ERRORS: dict[int, str] = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate not issued by the configured CA",
    19: "self-signed certificate in chain not issued by the configured CA",
    20: "signed by an unknown CA (not issued by the configured 'ca')",
    21: "unable to verify the first certificate",
    23: "certificate has been revoked",
    24: "invalid CA certificate",
    26: "certificate is not valid for this purpose "
    "(a client certificate on a server? see remote-cert-tls)",
}
