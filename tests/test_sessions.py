"""A client session and a server session talking in memory, under a fake clock.

The pair runs the real handshake (stateless cookie, TLS, key-method 2, push,
renegotiation) with a lossy in-memory link in between, as aioquic's
``client_and_server`` does: deterministic and fast, no sockets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from dcoctl.pki import PKI, make_pki
from dcoctl.protocol import events as ev
from dcoctl.protocol.client_session import ClientSession, ClientSettings
from dcoctl.protocol.handshake import (
    HandshakeAccept,
    HandshakeDrop,
    HandshakeReply,
    StatelessResponder,
)
from dcoctl.protocol.server_session import ServerSession, ServerSettings
from dcoctl.protocol.statickey import KeyDirection, StaticKey
from dcoctl.protocol.tls import TLSSettings
from dcoctl.protocol.wrapping import ControlWrap, PlainWrap, TLSAuthWrap, TLSCryptWrap

ADDR = b"198.18.0.2:40000"


@pytest.fixture(scope="module")
def pki() -> PKI:
    return make_pki()


@dataclass
class Pair:
    client: ClientSession
    responder: StatelessResponder
    server_settings: ServerSettings
    server: ServerSession | None = None
    now: float = 1_700_000_000.0
    loss: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    client_events: list[ev.Event] = field(default_factory=list)
    server_events: list[ev.Event] = field(default_factory=list)
    push: list[str] = field(
        default_factory=lambda: ["topology subnet", "ifconfig 10.8.0.2 255.255.255.0"]
    )
    reject: str | None = None

    def _to_server(self, data: bytes) -> None:
        if self.server is None:
            outcome = self.responder.handle(data, ADDR, self.now)
            if isinstance(outcome, HandshakeReply):
                self._deliver_client(outcome.packet)
            elif isinstance(outcome, HandshakeAccept):
                self.server = ServerSession(
                    self.server_settings, outcome.packet, self.now, cookie=outcome.cookie
                )
        else:
            self.server.receive_packet(data, self.now)

    def _deliver_client(self, data: bytes) -> None:
        if self.rng.random() >= self.loss:
            self.client.receive_packet(data, self.now)

    def step(self) -> None:
        for packet in self.client.packets_to_send(self.now):
            if self.rng.random() >= self.loss:
                self._to_server(packet)
        if self.server is not None:
            for packet in self.server.packets_to_send(self.now):
                self._deliver_client(packet)
            while (event := self.server.next_event()) is not None:
                self.server_events.append(event)
                if isinstance(event, ev.AuthenticationRequested):
                    if self.reject is not None:
                        self.server.reject_client(self.reject, self.now)
                    else:
                        self.server.accept_client(self.push, 3, self.now)
        while (event := self.client.next_event()) is not None:
            self.client_events.append(event)
        timers = [
            t
            for t in (self.client.get_timer(), self.server.get_timer() if self.server else None)
            if t is not None
        ]
        self.now = max(self.now + 0.001, min(timers, default=self.now + 0.1))
        self.now = min(self.now, self.now + 1)
        self.client.handle_timer(self.now)
        if self.server is not None:
            self.server.handle_timer(self.now)

    def run_until(self, predicate: object, limit: float = 600) -> None:
        start = self.now
        while not predicate():  # type: ignore[operator]
            assert self.now - start < limit, "did not converge"
            self.step()


def make_pair(
    pki: PKI,
    wrap: str = "tls-crypt",
    *,
    reneg_sec: int = 3600,
    ciphers: tuple[str, ...] = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"),
    server_ciphers: tuple[str, ...] | None = None,
    ekm: bool = True,
    loss: float = 0.0,
) -> Pair:
    key = StaticKey(bytes(range(256)))
    client_wrap: ControlWrap
    server_wrap: ControlWrap
    if wrap == "tls-crypt":
        client_wrap, server_wrap = (
            TLSCryptWrap(key, is_server=False),
            TLSCryptWrap(key, is_server=True),
        )
    elif wrap == "tls-auth":
        client_wrap = TLSAuthWrap(key, KeyDirection.INVERSE, "SHA256")
        server_wrap = TLSAuthWrap(key, KeyDirection.NORMAL, "SHA256")
    else:
        client_wrap = server_wrap = PlainWrap()
    ident = pki.clients["client"]
    client = ClientSession(
        ClientSettings(
            tls=TLSSettings(
                ca_pem=pki.ca_cert_pem,
                cert_pem=ident.cert_pem,
                key_pem=ident.key_pem,
                remote_cert_tls="server",
            ),
            wrap=client_wrap,
            data_ciphers=ciphers,
            announce_ekm=ekm,
            reneg_sec=reneg_sec,
        )
    )
    server_settings = ServerSettings(
        tls=TLSSettings(
            ca_pem=pki.ca_cert_pem,
            cert_pem=pki.server.cert_pem,
            key_pem=pki.server.key_pem,
            remote_cert_tls="client",
        ),
        wrap=server_wrap,
        data_ciphers=server_ciphers or ciphers,
        reneg_sec=reneg_sec,
    )
    pair = Pair(client, StatelessResponder(server_wrap), server_settings, loss=loss)
    client.connect(pair.now)
    return pair


def _established(pair: Pair) -> bool:
    return any(isinstance(e, ev.SessionEstablished) for e in pair.client_events)


@pytest.mark.parametrize("wrap", ["tls-crypt", "tls-auth", "none"])
@pytest.mark.parametrize("ekm", [True, False])
def test_client_and_server_agree_on_keys(pki: PKI, wrap: str, ekm: bool) -> None:
    pair = make_pair(pki, wrap, ekm=ekm)
    pair.run_until(lambda: _established(pair))
    assert pair.server is not None
    client_keys = next(e for e in pair.client_events if isinstance(e, ev.KeyInstalled)).keys
    server_keys = next(e for e in pair.server_events if isinstance(e, ev.KeyInstalled)).keys
    assert client_keys.encrypt_key == server_keys.decrypt_key
    assert client_keys.decrypt_nonce_tail == server_keys.encrypt_nonce_tail
    assert pair.client.key_derivation == pair.server.key_derivation == ("tls-ekm" if ekm else "prf")
    established = next(e for e in pair.client_events if isinstance(e, ev.SessionEstablished))
    assert established.peer_id == 3 and established.cipher == "AES-256-GCM"
    assert established.options.ifconfig == ("10.8.0.2", "255.255.255.0")
    auth = next(e for e in pair.server_events if isinstance(e, ev.AuthenticationRequested))
    assert auth.common_name == "client" and "IV_CIPHERS" in auth.peer_info


def test_server_cipher_order_wins(pki: PKI) -> None:
    pair = make_pair(
        pki,
        ciphers=("AES-256-GCM", "CHACHA20-POLY1305"),
        server_ciphers=("CHACHA20-POLY1305", "AES-256-GCM"),
    )
    pair.run_until(lambda: _established(pair))
    assert pair.client.cipher == "CHACHA20-POLY1305"


def test_no_shared_cipher_is_auth_failed(pki: PKI) -> None:
    pair = make_pair(pki, ciphers=("AES-128-GCM",), server_ciphers=("CHACHA20-POLY1305",))
    pair.run_until(lambda: any(isinstance(e, ev.SessionClosed) for e in pair.client_events))
    closed = next(e for e in pair.client_events if isinstance(e, ev.SessionClosed))
    assert closed.kind == "auth-failed" and "no shared cipher" in closed.reason


def test_rejected_client_gets_auth_failed_and_server_forgets_it(pki: PKI) -> None:
    pair = make_pair(pki)
    pair.reject = "bad password"
    pair.run_until(lambda: any(isinstance(e, ev.SessionClosed) for e in pair.server_events))
    closed = next(e for e in pair.client_events if isinstance(e, ev.SessionClosed))
    assert closed.kind == "auth-failed" and "bad password" in closed.reason


def test_long_push_is_split_and_reassembled(pki: PKI) -> None:
    pair = make_pair(pki)
    pair.push = ["topology subnet", "ifconfig 10.8.0.2 255.255.255.0"] + [
        f"route 172.16.{i}.0 255.255.255.0" for i in range(120)
    ]
    pair.run_until(lambda: _established(pair))
    established = next(e for e in pair.client_events if isinstance(e, ev.SessionEstablished))
    assert len(established.options.routes) == 120


def test_rekeys_from_both_sides_with_loss(pki: PKI) -> None:
    pair = make_pair(pki, reneg_sec=20, loss=0.2)
    pair.run_until(lambda: _established(pair))
    pair.run_until(
        lambda: (
            len([e for e in pair.client_events if isinstance(e, ev.RenegotiationCompleted)]) >= 9
        ),
        limit=900,
    )
    ids = [e.key_id for e in pair.client_events if isinstance(e, ev.RenegotiationCompleted)]
    assert ids[:9] == [1, 2, 3, 4, 5, 6, 7, 1, 2]
    assert pair.server is not None
    server_ids = [e.key_id for e in pair.server_events if isinstance(e, ev.KeyInstalled)]
    assert server_ids[:9] == [0, 1, 2, 3, 4, 5, 6, 7, 1]
    assert pair.client.current_key_id == pair.server.current_key_id


def test_stateless_responder_keeps_no_state_for_spoofed_resets(pki: PKI) -> None:
    pair = make_pair(pki)
    responder = pair.responder
    for packet in pair.client.packets_to_send(pair.now):
        outcome = responder.handle(packet, ADDR, pair.now)
        assert isinstance(outcome, HandshakeReply)
        # The same reset from another address gets a different cookie, and
        # the reply does not validate there.
        other = responder.handle(packet, b"198.18.9.9:1", pair.now)
        assert isinstance(other, HandshakeReply) and other.packet != outcome.packet
    assert isinstance(responder.handle(b"\x20" + bytes(30), ADDR, pair.now), HandshakeDrop)
    assert isinstance(responder.handle(b"", ADDR, pair.now), HandshakeDrop)
