"""tun devices and rtnetlink configuration against the real kernel.

Every test that touches the network gets its own namespaces (a
:class:`~dcoctl.testbed.NetnsPair` with the ``lnk`` prefix, removed in the
fixture's teardown). Code under test runs in a worker thread that
``setns()``\\ es into the client namespace: ``setns(CLONE_NEWNET)`` moves only
the calling thread, so the pytest process itself never leaves the root
namespace, while sockets, tun devices and child processes (``ping``) created
by that thread all live in the test namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dcoctl.errors import DatapathError
from dcoctl.netlink.links import (
    AddressHandle,
    LinkError,
    LinkManager,
    RouteHandle,
    RouteSet,
    cleanup_sync,
    netmask_to_prefixlen,
    prefixlen_to_netmask,
)
from dcoctl.testbed import NetnsPair
from dcoctl.userspace.tun import open_tun

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root and /dev/net/tun",
)


# -- helpers -------------------------------------------------------------------


def in_netns(ns: str, fn: Callable[[], T], timeout: float = 60.0) -> T:
    """Run ``fn()`` in a fresh thread inside network namespace ``ns``; return or re-raise."""
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"test body in {ns} did not finish within {timeout:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def run_in_netns(ns: str, body: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run(body())`` inside ``ns``."""

    def main() -> T:
        async def wrapper() -> T:
            return await body()

        return asyncio.run(wrapper())

    return in_netns(ns, main)


def ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    """``ip -j -n NS ARGS`` parsed."""
    out = subprocess.run(
        ["ip", "-j", "-n", ns, *args], capture_output=True, text=True, check=True
    ).stdout
    result: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return result


def routes(ns: str, *args: str) -> list[dict[str, Any]]:
    """IPv4 routes of ``ns`` (``ip -4 route show ARGS``), without volatile fields."""
    return sorted(
        (
            {k: v for k, v in r.items() if k not in ("flags", "expires")}
            for r in ip_json(ns, "-4", "route", "show", *args)
        ),
        key=json.dumps,
    )


def addresses(ns: str, dev: str) -> list[dict[str, Any]]:
    """The ``addr_info`` entries of ``dev`` (link-local IPv6 excluded)."""
    info: list[dict[str, Any]] = []
    for link in ip_json(ns, "addr", "show", "dev", dev):
        info.extend(a for a in link.get("addr_info", []) if a.get("scope") != "link")
    return info


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    """Two namespaces joined by a veth; the client side has a default route via the server."""
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun")
    with NetnsPair(prefix="lnk") as p:
        subprocess.run(
            ["ip", "-n", p.ns_client, "route", "add", "default", "via", p.server_ip],
            check=True,
        )
        yield p


@pytest.fixture
def tun_name() -> str:
    return f"dt{os.urandom(3).hex()}"


def remote_server(p: NetnsPair) -> str:
    """A VPN-server address in 198.18.0.0/15 behind the underlay gateway (not on the veth /24)."""
    net = ipaddress.ip_network(f"{p.client_ip}/{p.prefixlen}", strict=False)
    other = ipaddress.ip_address(int(net.network_address) ^ (1 << 16))  # 198.18 <-> 198.19
    return str(other + 10)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(
    src: str, dst: str, ident: int, seq: int, payload: bytes, reply: bool = False
) -> bytes:
    """A hand-built IPv4 ICMP echo request (or reply) packet."""
    icmp = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(icmp), 0x1234, 0x4000, 64, socket.IPPROTO_ICMP, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


def parse_icmp(packet: bytes) -> tuple[str, str, int, int, int, bytes] | None:
    """``(src, dst, type, ident, seq, payload)`` of an IPv4 ICMP echo packet, else ``None``."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_ICMP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp_type, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", packet, ihl)
    if icmp_type not in (0, 8):
        return None
    src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    return src, dst, icmp_type, ident, seq, packet[ihl + 8 :]


def read_until(fd: int, read: Callable[[], bytes], match: Callable[[bytes], bool]) -> bytes:
    """Read packets (skipping e.g. IPv6 router solicitations) until one matches."""
    deadline = time.monotonic() + 5.0
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            packet = read()
            if match(packet):
                return packet
    raise AssertionError("no matching packet read from the tun within 5s")


# -- pure helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "length"),
    [("0.0.0.0", 0), ("128.0.0.0", 1), ("255.255.255.0", 24), ("255.255.255.252", 30),
     ("255.255.255.255", 32)],
)  # fmt: skip
def test_netmask_conversions(mask: str, length: int) -> None:
    assert netmask_to_prefixlen(mask) == length
    assert prefixlen_to_netmask(length) == mask


@pytest.mark.parametrize("mask", ["255.0.255.0", "0.255.255.255", "255.255.255.253", "300.0.0.0"])
def test_netmask_rejects_non_contiguous_and_garbage(mask: str) -> None:
    with pytest.raises(ValueError, match="netmask"):
        netmask_to_prefixlen(mask)


@pytest.mark.parametrize("length", [-1, 33])
def test_prefixlen_out_of_range(length: int) -> None:
    with pytest.raises(ValueError, match="prefix length"):
        prefixlen_to_netmask(length)


def test_routeset_json_roundtrip_and_validation() -> None:
    undo = RouteSet(
        [
            AddressHandle("tun0", 7, "10.8.0.6", 32, peer="10.8.0.5"),
            RouteHandle("198.19.0.10", 32, gateway="198.18.0.1", ifname="eth1", ifindex=3),
            RouteHandle("::", 1, gateway="fd00::1", ifname="tun0", ifindex=7, metric=5, table=100),
        ]
    )
    again = RouteSet.from_json(undo.to_json())
    assert again == undo
    assert [e.describe() for e in again] == [
        "10.8.0.6 peer 10.8.0.5/32 dev tun0",
        "198.19.0.10/32 via 198.18.0.1 dev eth1",
        "::/1 via fd00::1 dev tun0 metric 5 table 100",
    ]
    assert RouteSet.from_json(RouteSet().to_json()) == RouteSet()
    for bad in (
        "",
        "[]",
        '{"version": 2, "entries": []}',
        '{"version": 1, "entries": [{"type": "rule"}]}',
        '{"version": 1, "entries": [{"type": "route", "dst": "10.0.0.0", "prefixlen": 33}]}',
        '{"version": 1, "entries": [{"type": "route", "dst": "nonsense", "prefixlen": 8}]}',
        '{"version": 1, "entries": [{"type": "address", "ifname": "x", "address": "10.0.0.1"}]}',
    ):
        with pytest.raises(DatapathError, match="malformed route undo log"):
            RouteSet.from_json(bad)


# -- tun -----------------------------------------------------------------------------


@needs_root
def test_open_tun_template_flags_and_close(pair: NetnsPair) -> None:
    ns = pair.ns_client

    def body() -> None:
        tun = open_tun("lnk%d")
        try:
            assert tun.name.startswith("lnk") and tun.name[3:].isdigit()
            flags = os.get_blocking(tun.fd), os.get_inheritable(tun.fd)
            assert flags == (False, False)  # O_NONBLOCK and O_CLOEXEC
            assert not tun.persist
            assert ip_json(ns, "link", "show", "dev", tun.name)[0]["ifname"] == tun.name
            with pytest.raises(BlockingIOError):
                tun.read()
        finally:
            tun.close()
            tun.close()  # idempotent
        assert tun.closed
        # Without persistence the interface goes away with the descriptor.
        names = [link["ifname"] for link in ip_json(ns, "link", "show")]
        assert tun.name not in names

    in_netns(ns, body)


@needs_root
def test_open_tun_errors_name_the_device(pair: NetnsPair, tun_name: str) -> None:
    def body() -> None:
        with open_tun(tun_name):
            with pytest.raises(DatapathError, match=f"{tun_name}.*already in use"):
                open_tun(tun_name)
        with pytest.raises(DatapathError, match="at most 15 bytes"):
            open_tun("x" * 16)
        with pytest.raises(DatapathError, match="invalid interface name"):
            open_tun("bad/name")
        # A name taken by a non-tun interface.
        with pytest.raises(DatapathError, match=f"'{pair.veth_client}'.*not a tun"):
            open_tun(pair.veth_client)

    in_netns(pair.ns_client, body)


@needs_root
def test_tun_packet_io(pair: NetnsPair, tun_name: str) -> None:
    """Write an echo request into the tun and read the kernel's reply; answer a real ping."""

    async def body() -> None:
        with open_tun(tun_name) as tun:
            async with LinkManager() as links:
                await links.add_address(tun.name, "10.8.0.2", 24)
                await links.set_link(tun.name, up=True)

            # Kernel <- tun: an echo request "from the VPN" to our address...
            tun.write(icmp_echo("10.8.0.1", "10.8.0.2", 0x4242, 1, b"dcoctl-probe"))
            # ...is answered by the kernel, and the reply is routed back into the tun.
            reply = parse_icmp(
                read_until(tun.fd, tun.read, lambda p: (parse_icmp(p) or ("",))[0] == "10.8.0.2")
            )
            assert reply == ("10.8.0.2", "10.8.0.1", 0, 0x4242, 1, b"dcoctl-probe")

            # tun -> us: ping a peer routed into the tun and answer by hand.
            ping = subprocess.Popen(
                ["ping", "-n", "-c", "1", "-W", "5", "10.8.0.77"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            try:
                request = parse_icmp(
                    read_until(
                        tun.fd,
                        tun.read,
                        lambda p: (parse_icmp(p) or ("", ""))[1:2] == ("10.8.0.77",),
                    )
                )
                assert request is not None
                src, dst, icmp_type, ident, seq, payload = request
                assert (src, dst, icmp_type) == ("10.8.0.2", "10.8.0.77", 8)
                tun.write(icmp_echo(dst, src, ident, seq, payload, reply=True))
                out, _ = ping.communicate(timeout=10)
            finally:
                if ping.poll() is None:
                    ping.kill()
                    ping.wait()
            assert ping.returncode == 0, out

        with pytest.raises(OSError):
            tun.read()  # closed

    run_in_netns(pair.ns_client, body)


# -- routes ------------------------------------------------------------------------


@needs_root
def test_redirect_gateway_setup_and_undo(pair: NetnsPair, tun_name: str) -> None:
    ns, server = pair.ns_client, remote_server(pair)
    changes: list[int] = []

    async def body() -> None:
        with open_tun(tun_name) as tun:
            async with LinkManager(on_change=lambda undo: changes.append(len(undo))) as links:
                assert await links.link_exists(tun.name)
                assert (
                    await links.link_index(tun.name)
                    == ip_json(ns, "link", "show", "dev", tun.name)[0]["ifindex"]
                )
                assert await links.link_index("x" * 20) is None
                await links.set_link(tun.name, mtu=1400, up=True)
                link = ip_json(ns, "link", "show", "dev", tun.name)[0]
                assert link["mtu"] == 1400 and "UP" in link["flags"]

                # Removing the *last* IPv4 address of a device makes the kernel
                # flush every route through it, which would hide a route that
                # undo_all failed to delete. An address we do not record keeps
                # the device configured, so the comparison below is exact.
                await links.add_address(tun.name, "10.9.0.2", 24, record=False)
                before = routes(ns, "table", "all")

                # The server is reached over the underlay, via its gateway.
                lookup = await links.route_get(server)
                assert lookup is not None
                assert (lookup.gateway, lookup.ifname, lookup.prefsrc) == (
                    pair.server_ip, pair.veth_client, pair.client_ip,
                )  # fmt: skip
                assert lookup.ifindex == await links.link_index(pair.veth_client)

                await links.add_address(tun.name, "10.8.0.2", 24)
                pinned = await links.pin_host_route(server)
                assert pinned == RouteHandle(
                    server, 32, gateway=pair.server_ip, ifname=pair.veth_client,
                    ifindex=lookup.ifindex,
                )  # fmt: skip
                # Pinning again finds the existing route: same path, not recorded twice.
                assert await links.pin_host_route(server) == pinned
                low = await links.add_route("0.0.0.0", 1, gateway="10.8.0.1", ifname=tun.name)
                await links.add_route("128.0.0.0", 1, gateway="10.8.0.1", ifname=tun.name)
                await links.add_route("10.99.0.0", 16, ifname=tun.name)  # on-link
                await links.add_route(
                    "10.97.0.0", 16, gateway="10.8.0.1", ifname=tun.name, metric=50, table=100
                )
                assert changes == [1, 2, 3, 4, 5, 6]

                # def1: everything goes into the tunnel, except the pinned server.
                via_tun = await links.route_get("203.0.113.7")
                assert via_tun is not None
                assert (via_tun.gateway, via_tun.ifname, via_tun.prefsrc) == (
                    "10.8.0.1", tun.name, "10.8.0.2",
                )  # fmt: skip
                still = await links.route_get(server)
                assert still is not None
                assert (still.gateway, still.ifname) == (pair.server_ip, pair.veth_client)
                onlink = await links.route_get("10.99.1.1")
                assert onlink is not None and (onlink.gateway, onlink.ifname) == (None, tun.name)
                main = {(r["dst"], r.get("gateway"), r["dev"]) for r in routes(ns)}
                assert {
                    (server, pair.server_ip, pair.veth_client),
                    ("0.0.0.0/1", "10.8.0.1", tun.name),
                    ("128.0.0.0/1", "10.8.0.1", tun.name),
                    ("10.99.0.0/16", None, tun.name),
                } <= main
                assert [(r["dst"], r["metric"]) for r in routes(ns, "table", "100")] == [
                    ("10.97.0.0/16", 50)
                ]

                # Deleting directly is idempotent and updates the undo log.
                await links.del_route(low)
                await links.del_route(low)
                assert len(links.undo) == 5 and changes[-1] == 5
                assert "0.0.0.0/1" not in {r["dst"] for r in routes(ns)}

                await links.undo_all()
                assert len(links.undo) == 0 and changes[-1] == 0
                assert routes(ns, "table", "all") == before
                assert [a["local"] for a in addresses(ns, tun.name)] == ["10.9.0.2"]
                await links.undo_all()  # nothing left: a no-op

    run_in_netns(ns, body)


@needs_root
def test_p2p_and_ipv6(pair: NetnsPair, tun_name: str) -> None:
    ns = pair.ns_client

    async def body() -> None:
        with open_tun(tun_name) as tun:
            async with LinkManager() as links:
                await links.set_link(tun.name, up=True)
                p2p = await links.add_address(tun.name, "10.8.0.6", 32, peer="10.8.0.5")
                assert p2p.peer == "10.8.0.5"
                await links.add_address(tun.name, "fd00:8::2", 64)
                await links.add_route("10.8.0.0", 24, gateway="10.8.0.5", ifname=tun.name)
                await links.add_route("fd00:9::", 64, gateway="fd00:8::1", ifname=tun.name)
                await links.add_route("2001:db8::", 32, ifname=tun.name)

                info = {(a["family"], a["local"], a.get("address"), a["prefixlen"])
                        for a in addresses(ns, tun.name)}  # fmt: skip
                assert info == {
                    ("inet", "10.8.0.6", "10.8.0.5", 32),
                    ("inet6", "fd00:8::2", None, 64),
                }
                v6 = await links.route_get("fd00:9::5")
                assert v6 is not None and (v6.gateway, v6.ifname) == ("fd00:8::1", tun.name)
                v6 = await links.route_get("2001:db8::1")
                assert v6 is not None and (v6.gateway, v6.ifname) == (None, tun.name)
                v4 = await links.route_get("10.8.0.9")
                assert v4 is not None and (v4.gateway, v4.prefsrc) == ("10.8.0.5", "10.8.0.6")
                assert await links.route_get("fd00:77::1") is None  # no IPv6 default route

                await links.undo_all()
                assert addresses(ns, tun.name) == []
                v6_routes = {r["dst"] for r in ip_json(ns, "-6", "route", "show")}
                assert not v6_routes & {"fd00:9::/64", "2001:db8::/32", "fd00:8::/64"}

    run_in_netns(ns, body)


@needs_root
def test_errors_say_what_failed(pair: NetnsPair, tun_name: str) -> None:
    async def body() -> None:
        with open_tun(tun_name) as tun:
            async with LinkManager() as links:
                await links.set_link(tun.name, up=True)
                await links.add_address(tun.name, "10.8.0.2", 24)

                with pytest.raises(DatapathError) as info:
                    await links.add_route("10.66.0.0", 16, ifname="nosuch0")
                assert str(info.value) == (
                    "adding route 10.66.0.0/16 dev nosuch0: no such interface 'nosuch0'"
                )
                await links.add_route("0.0.0.0", 1, gateway="10.8.0.1", ifname=tun.name)
                with pytest.raises(LinkError) as dup:
                    await links.add_route("0.0.0.0", 1, gateway="10.8.0.1", ifname=tun.name)
                assert str(dup.value) == (
                    f"adding route 0.0.0.0/1 via 10.8.0.1 dev {tun.name}: File exists"
                )
                assert dup.value.code == errno.EEXIST
                with pytest.raises(
                    LinkError, match=r"adding route 10\.65\.0\.0/16 via 10\.200\.0\.1: "
                ):
                    await links.add_route("10.65.0.0", 16, gateway="10.200.0.1")
                with pytest.raises(LinkError, match=r"adding address 10\.8\.0\.2/24 .*File exists"):
                    await links.add_address(tun.name, "10.8.0.2", 24)
                with pytest.raises(DatapathError, match="setting nosuch0 up: no such interface"):
                    await links.set_link("nosuch0", up=True)
                with pytest.raises(LinkError, match=f"setting {tun.name} mtu 40"):
                    await links.set_link(tun.name, mtu=40)
                # Failed adds are not in the undo log; the one success is.
                assert [e.describe() for e in links.undo] == [
                    f"10.8.0.2/24 dev {tun.name}",
                    f"0.0.0.0/1 via 10.8.0.1 dev {tun.name}",
                ]
                with pytest.raises(ValueError, match="host bits"):
                    await links.add_route("10.8.0.1", 24, ifname=tun.name)
                with pytest.raises(ValueError, match="differ in IP version"):
                    await links.add_route("10.9.0.0", 16, gateway="fd00::1")
                with pytest.raises(ValueError, match="needs a gateway or an interface"):
                    await links.add_route("10.9.0.0", 16)
                assert not await links.delete_link("nosuch0")
                assert not await links.link_exists("nosuch0")
                await links.undo_all()

        async with LinkManager() as links:
            # A closed tun takes its routes with it: undoing them is not an error.
            stale = RouteHandle("0.0.0.0", 1, gateway="10.8.0.1", ifname=tun_name, ifindex=999)
            await links.del_route(stale)
            await links.del_address(AddressHandle(tun_name, 999, "10.8.0.2", 24))
        closed = LinkManager()
        with pytest.raises(LinkError, match="not open"):
            await closed.link_index("lo")

    run_in_netns(pair.ns_client, body)


CRASHING_DAEMON = """
import asyncio, os, signal, sys
from dcoctl.netlink.links import LinkManager
from dcoctl.userspace.tun import open_tun

tun_name, server, state = sys.argv[1:]

def save(undo):
    with open(state + ".tmp", "w") as f:
        f.write(undo.to_json())
    os.replace(state + ".tmp", state)

async def main():
    tun = open_tun(tun_name, persist=True)  # like a DCO interface, it outlives us
    async with LinkManager(on_change=save) as links:
        await links.set_link(tun.name, up=True, mtu=1400)
        await links.add_address(tun.name, "10.8.0.2", 24)
        await links.pin_host_route(server)
        await links.add_route("0.0.0.0", 1, gateway="10.8.0.1", ifname=tun.name)
        await links.add_route("128.0.0.0", 1, gateway="10.8.0.1", ifname=tun.name)
        print("configured", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


@needs_root
def test_cleanup_after_sigkill(pair: NetnsPair, tun_name: str, tmp_path: Path) -> None:
    ns, server = pair.ns_client, remote_server(pair)
    state = tmp_path / "routes.json"
    before = routes(ns, "table", "all")

    proc = pair.run(
        ns, [sys.executable, "-c", CRASHING_DAEMON, tun_name, server, str(state)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert proc.stdout == "configured\n"

    # The dead daemon left its interface and the pinned underlay route behind.
    undo = RouteSet.from_json(state.read_text())
    assert [e.describe() for e in undo] == [
        f"10.8.0.2/24 dev {tun_name}",
        f"{server}/32 via {pair.server_ip} dev {pair.veth_client}",
        f"0.0.0.0/1 via 10.8.0.1 dev {tun_name}",
        f"128.0.0.0/1 via 10.8.0.1 dev {tun_name}",
    ]
    assert ip_json(ns, "link", "show", "dev", tun_name)
    assert routes(ns, server)

    in_netns(ns, lambda: cleanup_sync(tun_name, state.read_text()))
    assert not [link for link in ip_json(ns, "link", "show") if link["ifname"] == tun_name]
    assert routes(ns, "table", "all") == before

    in_netns(ns, lambda: cleanup_sync(tun_name, state.read_text()))  # idempotent
    in_netns(ns, lambda: cleanup_sync(None, None))
    with pytest.raises(DatapathError, match="malformed"):
        cleanup_sync(None, "{not json")
