"""Data-channel key derivation (reference D).

Both derivations yield the same 256-byte "key2" block; :func:`slice_keys`
cuts it into the per-direction AEAD key and nonce tail (D.4).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .keymethod import KeySource

KEY2_SIZE = 256
NONCE_TAIL_SIZE = 8

#: AEAD data ciphers and their key sizes (the only ones DCO can carry).
AEAD_KEY_SIZES: dict[str, int] = {
    "AES-128-GCM": 16,
    "AES-192-GCM": 24,
    "AES-256-GCM": 32,
    "CHACHA20-POLY1305": 32,
}


def _p_hash(digest: str, secret: bytes, seed: bytes, length: int) -> bytes:
    # RFC 2246 section 5: A(0) = seed, A(i) = HMAC(secret, A(i-1)).
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return out[:length]


def tls1_prf(secret: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.0 PRF: P_MD5 over the first half XOR P_SHA1 over the second."""
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], seed, length)
    sha1 = _p_hash("sha1", secret[len(secret) - half :], seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha1, strict=True))


def derive_key2_prf(
    client: KeySource, server: KeySource, client_sid: bytes, server_sid: bytes
) -> bytes:
    """Legacy OpenVPN PRF (D.3); labels without trailing space, sids in round two."""
    if client.pre_master is None:
        raise ValueError("the client's key source needs its pre-master secret")
    master = tls1_prf(
        client.pre_master, b"OpenVPN master secret" + client.random1 + server.random1, 48
    )
    return tls1_prf(
        master,
        b"OpenVPN key expansion" + client.random2 + server.random2 + client_sid + server_sid,
        KEY2_SIZE,
    )


@dataclass(frozen=True)
class DataKeys:
    """One key_id's data-channel keys, as one side uses them."""

    cipher: str
    encrypt_key: bytes
    encrypt_nonce_tail: bytes
    decrypt_key: bytes
    decrypt_nonce_tail: bytes

    def __repr__(self) -> str:
        return f"DataKeys(cipher={self.cipher!r}, <secret>)"

    def fingerprint(self) -> str:
        """Short non-secret digest, for logs and tests comparing both ends."""
        return hashlib.sha256(self.encrypt_key + self.decrypt_key).hexdigest()[:12]


def slice_keys(key2: bytes, cipher: str, *, server: bool) -> DataKeys:
    """Cut key2 into this side's keys (D.1/D.4): client sends with key[0]."""
    if len(key2) != KEY2_SIZE:
        raise ValueError("key2 must be 256 bytes")
    size = AEAD_KEY_SIZES[cipher]
    c2s_key, c2s_tail = key2[0:size], key2[64 : 64 + NONCE_TAIL_SIZE]
    s2c_key, s2c_tail = key2[128 : 128 + size], key2[192 : 192 + NONCE_TAIL_SIZE]
    if server:
        return DataKeys(cipher, s2c_key, s2c_tail, c2s_key, c2s_tail)
    return DataKeys(cipher, c2s_key, c2s_tail, s2c_key, s2c_tail)
