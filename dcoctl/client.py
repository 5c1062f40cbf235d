"""Turn a parsed client configuration into protocol-core settings.

The protocol core knows nothing about config files; this module is the one
place where ``.ovpn`` directives become :class:`ClientSettings`.
"""

from __future__ import annotations

from .config import ClientConfig
from .errors import ConfigError
from .protocol.client_session import ClientSettings
from .protocol.tls import TLSSettings
from .protocol.tlscryptv2 import parse_client_key
from .protocol.wrapping import ControlWrap, PlainWrap, TLSAuthWrap, TLSCryptWrap
from .server_config import ServerConfig


def control_wrap(cfg: ClientConfig) -> ControlWrap:
    """The control-channel wrapping the profile asks for."""
    if cfg.tls_crypt_v2_key_pem is not None:
        key, wkc = parse_client_key(cfg.tls_crypt_v2_key_pem, cfg.source)
        return TLSCryptWrap(key, is_server=False, wkc=wkc, early_negotiation=True)
    if cfg.tls_crypt_key is not None:
        return TLSCryptWrap(cfg.tls_crypt_key, is_server=False)
    if cfg.tls_auth_key is not None:
        return TLSAuthWrap(cfg.tls_auth_key, cfg.key_direction, cfg.auth)
    return PlainWrap()


def client_settings(
    cfg: ClientConfig, proto: str, username: str | None = None, password: str | None = None
) -> ClientSettings:
    """Protocol-core settings for one connection attempt over ``proto``."""
    tls = tls_settings(cfg)
    extra = [(name, value) for name, value in cfg.setenv if name.startswith("UV_")]
    extra.append(("IV_GUI_VER", "dcoctl"))
    return ClientSettings(
        tls=tls,
        wrap=control_wrap(cfg),
        proto=proto,
        data_ciphers=tuple(cfg.data_ciphers),
        data_ciphers_fallback=cfg.data_ciphers_fallback,
        username=username,
        password=password,
        announce_ekm=cfg.key_derivation != "prf",
        reneg_sec=cfg.reneg_sec,
        hand_window=cfg.hand_window,
        tls_timeout=float(cfg.tls_timeout),
        tun_mtu=cfg.tun_mtu,
        pull_filters=tuple(cfg.pull_filters),
        route_nopull=cfg.route_nopull,
        extra_peer_info=tuple(extra),
        tls_crypt_v2=cfg.tls_crypt_v2_key_pem is not None,
    )


def tls_settings(cfg: ClientConfig | ServerConfig) -> TLSSettings:
    """TLS settings from either kind of config (the directives are the same)."""
    verify_client_cert, crl_pem = "require", None
    if isinstance(cfg, ServerConfig):
        verify_client_cert, crl_pem = cfg.verify_client_cert, cfg.crl_pem
    return TLSSettings(
        ca_pem=cfg.ca_pem,
        cert_pem=cfg.cert_pem,
        key_pem=cfg.key_pem,
        pkcs12=cfg.pkcs12,
        extra_certs_pem=cfg.extra_certs_pem,
        remote_cert_tls=cfg.remote_cert_tls,
        verify_x509_name=cfg.verify_x509_name,
        tls_version_min=_tls_version(cfg.tls_version_min) or "1.2",
        tls_version_max=_tls_version(cfg.tls_version_max),
        tls_cipher=cfg.tls_cipher,
        tls_ciphersuites=cfg.tls_ciphersuites,
        tls_groups=cfg.tls_groups,
        verify_client_cert=verify_client_cert,
        crl_pem=crl_pem,
    )


def _tls_version(value: str | None) -> str | None:
    if value is None:
        return None
    version = value.split()[0]
    if version not in ("1.0", "1.1", "1.2", "1.3"):
        raise ConfigError(f"unsupported TLS version '{value}'")
    return version


def control_wrap_for_server(cfg: ServerConfig) -> ControlWrap:
    """The server's control-channel wrapping (tls-crypt-v2 is per client)."""
    if cfg.tls_crypt_key is not None:
        return TLSCryptWrap(cfg.tls_crypt_key, is_server=True)
    if cfg.tls_auth_key is not None:
        return TLSAuthWrap(cfg.tls_auth_key, cfg.key_direction, cfg.auth)
    return PlainWrap()
