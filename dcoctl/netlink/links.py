"""Addresses, MTU and routes over rtnetlink: a typed adapter around pyroute2.

The daemon is asyncio, and pyroute2's synchronous ``IPRoute`` must not be
used inside a running event loop (pyroute2 issue #1342), so this module is
async: :class:`LinkManager` wraps one :class:`pyroute2.AsyncIPRoute` socket
and exposes typed coroutines. The CLI, which has no loop of its own, uses
:func:`cleanup_sync`.

Every address and route a :class:`LinkManager` adds is recorded in a
:class:`RouteSet` (an undo log). :meth:`LinkManager.undo_all` removes them
again in reverse order, and :meth:`RouteSet.to_json` /
:meth:`RouteSet.from_json` let the daemon persist the log in its state file
so that ``dcoctl down`` can remove leftovers after the daemon was SIGKILLed.

Namespaces: the netlink socket is opened in the network namespace of the
thread that calls :meth:`LinkManager.open` (or enters ``async with``), and
pyroute2 keeps per-thread sockets, so use a manager only from the event loop
thread that opened it.

Failures raise :class:`LinkError`, a :class:`~dcoctl.errors.DatapathError`
whose message says what was being done, e.g. ``adding route 0.0.0.0/1 via
10.8.0.1 dev tun0: File exists``. Malformed arguments (not an IP address,
prefix length out of range, mixed families) raise :class:`ValueError`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import DatapathError

__all__ = [
    "AddressHandle",
    "LinkError",
    "LinkManager",
    "RouteHandle",
    "RouteLookup",
    "RouteSet",
    "UndoEntry",
    "cleanup_sync",
    "netmask_to_prefixlen",
    "prefixlen_to_netmask",
]

_IFNAMSIZ: Final = 16
_RT_SCOPE_LINK: Final = 253
_RT_SCOPE_NOWHERE: Final = 255  # "any scope" in a delete request, as iproute2 sends
_UNDO_VERSION: Final = 1

# Errors meaning "already gone": the object, its interface or its address.
_GONE_ROUTE: Final = frozenset({errno.ESRCH, errno.ENOENT, errno.ENODEV})
_GONE_ADDRESS: Final = frozenset({errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV})
_NO_ROUTE: Final = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})


class LinkError(DatapathError):
    """An rtnetlink request failed.

    ``action`` describes the request (``"adding route 0.0.0.0/1 via 10.8.0.1
    dev tun0"``); ``code`` is the errno, or ``None`` when the failure was
    detected before talking to the kernel (e.g. an unknown interface name).
    """

    def __init__(self, action: str, reason: str, code: int | None = None) -> None:
        self.action = action
        self.reason = reason
        self.code = code
        super().__init__(f"{action}: {reason}")


# -- pure helpers ------------------------------------------------------------


def netmask_to_prefixlen(netmask: str) -> int:
    """Convert a dotted IPv4 netmask to a prefix length: ``"255.255.255.0"`` -> ``24``.

    Raises :class:`ValueError` for something that is not an IPv4 address or
    whose one bits are not contiguous (``"255.0.255.0"``).
    """
    try:
        value = int(ipaddress.IPv4Address(netmask))
    except ipaddress.AddressValueError as exc:
        raise ValueError(f"invalid netmask {netmask!r}: {exc}") from exc
    prefixlen = 32 - ((~value & 0xFFFFFFFF).bit_length())
    if value != (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF:
        raise ValueError(f"invalid netmask {netmask!r}: the one bits are not contiguous")
    return prefixlen


def prefixlen_to_netmask(prefixlen: int) -> str:
    """Convert an IPv4 prefix length to a dotted netmask: ``24`` -> ``"255.255.255.0"``.

    Raises :class:`ValueError` unless ``0 <= prefixlen <= 32``.
    """
    if isinstance(prefixlen, bool) or not 0 <= prefixlen <= 32:
        raise ValueError(f"invalid IPv4 prefix length {prefixlen!r} (0..32)")
    return str(ipaddress.IPv4Address((0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF))


def _ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid {what} {text!r}: not an IPv4 or IPv6 address") from None


def _check_prefixlen(prefixlen: int, version: int) -> None:
    limit = 32 if version == 4 else 128
    if isinstance(prefixlen, bool) or not isinstance(prefixlen, int) or not 0 <= prefixlen <= limit:
        raise ValueError(f"invalid IPv{version} prefix length {prefixlen!r} (0..{limit})")


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


# -- undo log entries ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteHandle:
    """A route added by :meth:`LinkManager.add_route`; pass it to ``del_route``.

    ``ifindex`` is the index ``ifname`` had when the route was added. Deletes
    use the index rather than the name, so replaying an old undo log can never
    remove a route from a newer interface that happens to reuse the name.
    """

    dst: str
    prefixlen: int
    gateway: str | None = None
    ifname: str | None = None
    ifindex: int | None = None
    metric: int | None = None
    table: int | None = None

    @property
    def version(self) -> int:
        """4 or 6."""
        return _ip(self.dst, "destination").version

    def describe(self) -> str:
        """``ip route``-style text: ``0.0.0.0/1 via 10.8.0.1 dev tun0 metric 5``."""
        text = f"{self.dst}/{self.prefixlen}"
        if self.gateway is not None:
            text += f" via {self.gateway}"
        if self.ifname is not None:
            text += f" dev {self.ifname}"
        if self.metric is not None:
            text += f" metric {self.metric}"
        if self.table is not None:
            text += f" table {self.table}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (see :meth:`RouteSet.to_json`)."""
        return {
            "type": "route",
            "dst": self.dst,
            "prefixlen": self.prefixlen,
            "gateway": self.gateway,
            "ifname": self.ifname,
            "ifindex": self.ifindex,
            "metric": self.metric,
            "table": self.table,
        }


@dataclass(frozen=True, slots=True)
class AddressHandle:
    """An address added by :meth:`LinkManager.add_address`.

    ``peer`` is set for point-to-point (net30/p2p) addresses: ``address`` is
    then the local end and ``peer`` the remote one.
    """

    ifname: str
    ifindex: int
    address: str
    prefixlen: int
    peer: str | None = None

    @property
    def version(self) -> int:
        """4 or 6."""
        return _ip(self.address, "address").version

    def describe(self) -> str:
        """``ip addr``-style text: ``10.8.0.6 peer 10.8.0.5/32 dev tun0``."""
        if self.peer is not None:
            return f"{self.address} peer {self.peer}/{self.prefixlen} dev {self.ifname}"
        return f"{self.address}/{self.prefixlen} dev {self.ifname}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (see :meth:`RouteSet.to_json`)."""
        return {
            "type": "address",
            "ifname": self.ifname,
            "ifindex": self.ifindex,
            "address": self.address,
            "prefixlen": self.prefixlen,
            "peer": self.peer,
        }


UndoEntry = RouteHandle | AddressHandle
"""One thing :class:`RouteSet` knows how to remove again."""


def _opt(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise TypeError(f"{key!r} must be {kind.__name__} or null, not {value!r}")
    return value


def _req(data: dict[str, Any], key: str, kind: type) -> Any:
    value = _opt(data, key, kind)
    if value is None:
        raise TypeError(f"{key!r} is missing")
    return value


def _entry_from_dict(data: Any) -> UndoEntry:
    if not isinstance(data, dict):
        raise TypeError(f"entry must be an object, not {data!r}")
    kind = data.get("type")
    entry: UndoEntry
    if kind == "route":
        entry = RouteHandle(
            dst=_req(data, "dst", str),
            prefixlen=_req(data, "prefixlen", int),
            gateway=_opt(data, "gateway", str),
            ifname=_opt(data, "ifname", str),
            ifindex=_opt(data, "ifindex", int),
            metric=_opt(data, "metric", int),
            table=_opt(data, "table", int),
        )
        version = _ip(entry.dst, "destination").version
        if entry.gateway is not None and _ip(entry.gateway, "gateway").version != version:
            raise ValueError(f"gateway family differs from destination in {data!r}")
    elif kind == "address":
        entry = AddressHandle(
            ifname=_req(data, "ifname", str),
            ifindex=_req(data, "ifindex", int),
            address=_req(data, "address", str),
            prefixlen=_req(data, "prefixlen", int),
            peer=_opt(data, "peer", str),
        )
        version = _ip(entry.address, "address").version
        if entry.peer is not None and _ip(entry.peer, "peer").version != version:
            raise ValueError(f"peer family differs from address in {data!r}")
    else:
        raise ValueError(f"unknown entry type {kind!r}")
    _check_prefixlen(entry.prefixlen, version)
    return entry


class RouteSet:
    """An ordered undo log of the routes and addresses a :class:`LinkManager` added.

    Entries are kept in the order they were added; undo walks them backwards
    (routes via an address's subnet go before the address). The JSON form is
    ``{"version": 1, "entries": [{"type": "route", ...}, {"type": "address", ...}]}``.
    """

    def __init__(self, entries: Iterable[UndoEntry] = ()) -> None:
        self._entries: list[UndoEntry] = list(entries)

    @property
    def entries(self) -> tuple[UndoEntry, ...]:
        """The entries, oldest first."""
        return tuple(self._entries)

    def record(self, entry: UndoEntry) -> None:
        """Append ``entry``."""
        self._entries.append(entry)

    def discard(self, entry: UndoEntry) -> bool:
        """Forget the most recent entry equal to ``entry``; whether there was one."""
        for i in range(len(self._entries) - 1, -1, -1):
            if self._entries[i] == entry:
                del self._entries[i]
                return True
        return False

    def clear(self) -> None:
        """Forget every entry (without removing anything from the kernel)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[UndoEntry]:
        return iter(tuple(self._entries))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteSet) and self._entries == other._entries

    def __repr__(self) -> str:
        return f"RouteSet({self._entries!r})"

    def to_json(self) -> str:
        """Serialise for a state file (compact, one line)."""
        return json.dumps(
            {"version": _UNDO_VERSION, "entries": [e.to_dict() for e in self._entries]},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RouteSet:
        """Parse :meth:`to_json` output.

        Raises :class:`~dcoctl.errors.DatapathError` for malformed input (a
        truncated or hand-edited state file), naming what is wrong.
        """
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != _UNDO_VERSION:
                raise ValueError(f"expected an object with version {_UNDO_VERSION}")
            entries = data.get("entries")
            if not isinstance(entries, list):
                raise ValueError("'entries' must be a list")
            return cls([_entry_from_dict(item) for item in entries])
        except (ValueError, TypeError) as exc:
            raise DatapathError(f"malformed route undo log: {exc}") from exc


# -- lookups -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteLookup:
    """The kernel's answer to ``ip route get DST``.

    ``gateway`` is ``None`` for an on-link destination; ``ifname`` may be
    ``None`` if the interface vanished between the lookup and the name query.
    """

    dst: str
    ifindex: int
    ifname: str | None
    gateway: str | None = None
    prefsrc: str | None = None
    table: int | None = None


# -- the manager ---------------------------------------------------------------


def _attr(msg: Any, name: str) -> Any:
    """An attribute of a pyroute2 message, or ``None``. Keeps ``Any`` local."""
    return msg.get_attr(name)


def _reason(exc: Any) -> tuple[str, int | None]:
    """The human-readable reason and errno of a pyroute2/OS exception."""
    code: int | None = getattr(exc, "code", None) if isinstance(exc, NetlinkError) else None
    if code is None and isinstance(exc, OSError):
        code = exc.errno
    text = ""
    if isinstance(exc, NetlinkError) and len(exc.args) > 1 and exc.args[1]:
        text = str(exc.args[1])  # the kernel's extended-ack text when available
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    if not text:
        text = os.strerror(code) if code else str(exc) or type(exc).__name__
    elif code and text != os.strerror(code):
        # Extended-ack messages ("Nexthop has invalid gateway") are precise but
        # hide the errno; keep both.
        text = f"{text} ({os.strerror(code)})"
    return text, code


class LinkManager:
    """Typed async access to rtnetlink: links, addresses and routes.

    Use as ``async with LinkManager() as links: ...`` (or :meth:`open` /
    :meth:`close`). One netlink socket serves all requests; it lives in the
    network namespace of the thread that opened the manager.

    ``undo`` is the :class:`RouteSet` that ``add_address`` and ``add_route``
    append to (a fresh one by default; pass a loaded one to replay an old log
    with :meth:`undo_all`). ``on_change`` is called with that set after every
    change so the daemon can persist it immediately: a SIGKILL right after a
    route was added then still leaves a record of it.
    """

    def __init__(
        self,
        undo: RouteSet | None = None,
        on_change: Callable[[RouteSet], None] | None = None,
    ) -> None:
        self._undo = undo if undo is not None else RouteSet()
        self._on_change = on_change
        self._ipr: Any = None

    @property
    def undo(self) -> RouteSet:
        """The undo log of everything this manager added (and has not removed)."""
        return self._undo

    # -- lifecycle

    async def open(self) -> None:
        """Open the netlink socket in the calling thread's network namespace. Idempotent."""
        if self._ipr is not None:
            return
        try:
            # groups=0: a request socket must not subscribe to broadcasts, or
            # unread notifications fill its queue (pyroute2 joins the route,
            # address and link groups by default). ext_ack=True makes the
            # kernel explain EINVAL-style failures in words.
            ipr = AsyncIPRoute(groups=0, ext_ack=True)
            # Create the socket now, not on the first request, so it is bound
            # to the namespace we are in at open() time.
            await ipr.setup_endpoint()
        except (NetlinkError, OSError) as exc:
            reason, code = _reason(exc)
            raise LinkError("opening rtnetlink socket", reason, code) from exc
        self._ipr = ipr

    def close(self) -> None:
        """Close the netlink socket. Idempotent; the undo log is kept."""
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            ipr.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing

    async def _request(
        self,
        action: str,
        method: str,
        *args: Any,
        ignore: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> list[Any] | None:
        """Run ``ipr.METHOD(*args, **kwargs)``; ``None`` if it failed with an ignored errno."""
        if self._ipr is None:
            raise LinkError(action, "the LinkManager is not open")
        try:
            result = await getattr(self._ipr, method)(*args, **kwargs)
        except (NetlinkError, OSError) as exc:
            reason, code = _reason(exc)
            if code is not None and code in ignore:
                return None
            raise LinkError(action, reason, code) from exc
        return list(result) if result is not None else []

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._undo)

    async def _require_index(self, ifname: str, action: str) -> int:
        index = await self.link_index(ifname)
        if index is None:
            raise LinkError(action, f"no such interface {ifname!r}", errno.ENODEV)
        return index

    # -- links

    async def link_index(self, ifname: str) -> int | None:
        """The interface index of ``ifname``, or ``None`` if there is no such interface."""
        raw = ifname.encode("utf-8", "surrogateescape")
        if not raw or len(raw) >= _IFNAMSIZ or b"\0" in raw:
            return None  # cannot exist; the kernel would answer EINVAL, not ENODEV
        links = await self._request(
            f"looking up interface {ifname}", "link", "get", ifname=ifname,
            ignore=frozenset({errno.ENODEV}),
        )  # fmt: skip
        if not links:
            return None
        return int(links[0]["index"])

    async def link_exists(self, ifname: str) -> bool:
        """Whether an interface called ``ifname`` exists."""
        return await self.link_index(ifname) is not None

    async def link_name(self, index: int) -> str | None:
        """The name of interface ``index``, or ``None`` if there is none."""
        links = await self._request(
            f"looking up interface #{index}", "link", "get", index=index,
            ignore=frozenset({errno.ENODEV}),
        )  # fmt: skip
        if not links:
            return None
        name = _attr(links[0], "IFLA_IFNAME")
        return str(name) if name is not None else None

    async def set_link(
        self, ifname: str, *, up: bool | None = None, mtu: int | None = None
    ) -> None:
        """Bring ``ifname`` up or down and/or set its MTU (``None`` leaves it alone)."""
        changes = []
        if mtu is not None:
            # Bounds are per device type (tun: 68..65535); the kernel checks them.
            if isinstance(mtu, bool) or mtu < 0:
                raise ValueError(f"invalid MTU {mtu!r}")
            changes.append(f"mtu {mtu}")
        if up is not None:
            changes.append("up" if up else "down")
        if not changes:
            return
        action = f"setting {ifname} {' '.join(changes)}"
        index = await self._require_index(ifname, action)
        kwargs: dict[str, Any] = {}
        if mtu is not None:
            kwargs["mtu"] = mtu
        if up is not None:
            kwargs["state"] = "up" if up else "down"
        await self._request(action, "link", "set", index=index, **kwargs)

    async def delete_link(self, ifname: str) -> bool:
        """Delete interface ``ifname``; ``False`` if it did not exist.

        Addresses and routes on it disappear with it.
        """
        index = await self.link_index(ifname)
        if index is None:
            return False
        done = await self._request(
            f"deleting interface {ifname}", "link", "del", index=index,
            ignore=frozenset({errno.ENODEV}),
        )  # fmt: skip
        return done is not None

    # -- addresses

    async def add_address(
        self,
        ifname: str,
        address: str,
        prefixlen: int,
        peer: str | None = None,
        *,
        record: bool = True,
    ) -> AddressHandle:
        """Add ``address/prefixlen`` to ``ifname``, IPv4 or IPv6.

        Subnet topology: ``add_address("tun0", "10.8.0.2", 24)``. Point-to-point
        (net30/p2p): ``add_address("tun0", "10.8.0.6", 32, peer="10.8.0.5")``
        makes ``address`` the local end and ``peer`` the remote one, like
        ``ip addr add 10.8.0.6 peer 10.8.0.5/32``.

        An address that already exists raises :class:`LinkError` (``File
        exists``) rather than being adopted, so the undo log never claims, and
        later deletes, something this process did not create. With
        ``record=False`` the address is not put in :attr:`undo`.
        """
        local = _ip(address, "address")
        _check_prefixlen(prefixlen, local.version)
        remote = _ip(peer, "peer address") if peer is not None else None
        if remote is not None and remote.version != local.version:
            raise ValueError(f"address {address} and peer {peer} are different IP versions")
        handle = AddressHandle(ifname, 0, str(local), prefixlen, str(remote) if remote else None)
        action = f"adding address {handle.describe()}"
        index = await self._require_index(ifname, action)
        handle = AddressHandle(ifname, index, handle.address, prefixlen, handle.peer)
        # IFA_LOCAL is our end; IFA_ADDRESS is the peer on p2p links and equal
        # to IFA_LOCAL otherwise (what iproute2 sends).
        await self._request(
            action, "addr", "add",
            index=index, family=_family(local.version), prefixlen=prefixlen,
            local=handle.address, address=handle.peer or handle.address,
        )  # fmt: skip
        if record:
            self._undo.record(handle)
            self._changed()
        return handle

    async def del_address(self, handle: AddressHandle) -> None:
        """Remove an address; already gone (or its interface gone) is not an error."""
        await self._request(
            f"deleting address {handle.describe()}", "addr", "del",
            index=handle.ifindex, family=_family(handle.version), prefixlen=handle.prefixlen,
            local=handle.address, address=handle.peer or handle.address,
            ignore=_GONE_ADDRESS,
        )  # fmt: skip
        if self._undo.discard(handle):
            self._changed()

    # -- routes

    async def add_route(
        self,
        dst: str,
        prefixlen: int,
        *,
        gateway: str | None = None,
        ifname: str | None = None,
        metric: int | None = None,
        table: int | None = None,
        record: bool = True,
    ) -> RouteHandle:
        """Add the route ``dst/prefixlen`` (IPv4 or IPv6) and return its handle.

        At least one of ``gateway`` and ``ifname`` is required. Without a
        gateway the IPv4 route is on-link (scope link, like ``ip route add
        ... dev IF``). ``dst`` must not have host bits set beyond
        ``prefixlen``. ``table`` defaults to main.

        An identical existing route raises :class:`LinkError` (``File
        exists``): it belongs to someone else and must not end up in the undo
        log. With ``record=False`` the route is not put in :attr:`undo`.
        """
        dest = _ip(dst, "destination")
        _check_prefixlen(prefixlen, dest.version)
        try:
            ipaddress.ip_network(f"{dest}/{prefixlen}", strict=True)
        except ValueError:
            raise ValueError(f"invalid route {dst}/{prefixlen}: host bits set") from None
        via = _ip(gateway, "gateway") if gateway is not None else None
        if via is not None and via.version != dest.version:
            raise ValueError(f"route {dst}/{prefixlen} and gateway {gateway} differ in IP version")
        if via is None and ifname is None:
            raise ValueError(f"route {dst}/{prefixlen} needs a gateway or an interface")
        if metric is not None and not 0 <= metric <= 0xFFFFFFFF:
            raise ValueError(f"invalid metric {metric!r}")
        if table is not None and not 1 <= table <= 0xFFFFFFFF:
            raise ValueError(f"invalid routing table {table!r}")
        handle = RouteHandle(
            str(dest), prefixlen, str(via) if via else None, ifname, None, metric, table
        )
        action = f"adding route {handle.describe()}"
        index = await self._require_index(ifname, action) if ifname is not None else None
        handle = RouteHandle(handle.dst, prefixlen, handle.gateway, ifname, index, metric, table)
        kwargs = self._route_args(handle)
        if via is None and dest.version == 4:
            kwargs["scope"] = _RT_SCOPE_LINK
        await self._request(action, "route", "add", **kwargs)
        if record:
            self._undo.record(handle)
            self._changed()
        return handle

    @staticmethod
    def _route_args(handle: RouteHandle) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "family": _family(handle.version),
            "dst": handle.dst,
            "dst_len": handle.prefixlen,
        }
        if handle.gateway is not None:
            kwargs["gateway"] = handle.gateway
        if handle.ifindex is not None:
            kwargs["oif"] = handle.ifindex
        if handle.metric is not None:
            kwargs["priority"] = handle.metric
        if handle.table is not None:
            kwargs["table"] = handle.table
        return kwargs

    async def del_route(self, handle: RouteHandle) -> None:
        """Remove a route; already gone (or its interface gone) is not an error."""
        kwargs = self._route_args(handle)
        if handle.version == 4:
            # iproute2 deletes with scope "nowhere" (= any): the kernel then
            # matches both on-link and gatewayed routes.
            kwargs["scope"] = _RT_SCOPE_NOWHERE
        await self._request(
            f"deleting route {handle.describe()}", "route", "del", **kwargs, ignore=_GONE_ROUTE
        )
        if self._undo.discard(handle):
            self._changed()

    async def route_get(self, dst: str) -> RouteLookup | None:
        """Ask the kernel how it would route to ``dst`` (``ip route get DST``).

        ``None`` when there is no route (network or host unreachable).
        """
        dest = _ip(dst, "destination")
        msgs = await self._request(
            f"looking up the route to {dest}", "route", "get",
            dst=str(dest), family=_family(dest.version), ignore=_NO_ROUTE,
        )  # fmt: skip
        if not msgs:
            return None
        msg = msgs[0]
        oif = _attr(msg, "RTA_OIF")
        if oif is None:
            return None
        gateway = _attr(msg, "RTA_GATEWAY")
        prefsrc = _attr(msg, "RTA_PREFSRC")
        table = _attr(msg, "RTA_TABLE")
        return RouteLookup(
            dst=str(dest),
            ifindex=int(oif),
            ifname=await self.link_name(int(oif)),
            gateway=str(gateway) if gateway is not None else None,
            prefsrc=str(prefsrc) if prefsrc is not None else None,
            table=int(table) if table is not None else None,
        )

    async def pin_host_route(self, dst: str, *, record: bool = True) -> RouteHandle | None:
        """Pin a host route (/32 or /128) to ``dst`` along its current path.

        Used before ``redirect-gateway def1``: the VPN server must stay
        reachable through the original gateway once ``0.0.0.0/1`` and
        ``128.0.0.0/1`` point into the tunnel. Returns ``None`` when there is
        no route to ``dst`` or it is local/on-link through loopback.

        If a host route to ``dst`` already exists, the lookup followed it, so
        the path is pinned already: its handle is returned but not recorded in
        :attr:`undo` (it is not ours to delete).
        """
        lookup = await self.route_get(dst)
        if lookup is None or lookup.ifname is None or lookup.ifname == "lo":
            return None
        dest = _ip(dst, "destination")
        try:
            return await self.add_route(
                str(dest),
                dest.max_prefixlen,
                gateway=lookup.gateway,
                ifname=lookup.ifname,
                record=record,
            )
        except LinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        return RouteHandle(
            str(dest), dest.max_prefixlen, lookup.gateway, lookup.ifname, lookup.ifindex
        )

    # -- undo

    async def remove(self, entry: UndoEntry) -> None:
        """Remove one route or address (and forget it in :attr:`undo`)."""
        if isinstance(entry, RouteHandle):
            await self.del_route(entry)
        else:
            await self.del_address(entry)

    async def undo_all(self) -> None:
        """Remove everything in :attr:`undo`, newest first.

        Best effort: an entry whose removal fails stays in the log, the others
        are still removed, and a :class:`LinkError` listing the failures is
        raised at the end. Entries already gone count as removed.
        """
        failures: list[str] = []
        for entry in reversed(self._undo.entries):
            try:
                await self.remove(entry)
            except LinkError as exc:
                failures.append(str(exc))
        if failures:
            raise LinkError("undoing network configuration", "; ".join(failures))


async def _cleanup(ifname: str | None, undo: RouteSet) -> None:
    async with LinkManager(undo) as links:
        failure: LinkError | None = None
        try:
            await links.undo_all()
        except LinkError as exc:
            failure = exc
        # Delete the interface even when some route could not be removed: a
        # leftover DCO interface is the worse leak.
        if ifname is not None:
            await links.delete_link(ifname)
        if failure is not None:
            raise failure


def cleanup_sync(ifname: str | None, routes_json: str | bytes | RouteSet | None) -> None:
    """Remove a dead daemon's leftovers: for ``dcoctl down`` after a crash.

    Replays the undo log ``routes_json`` (:meth:`RouteSet.to_json` output or
    a :class:`RouteSet`; ``None`` for nothing), then deletes interface
    ``ifname`` if given and still present. Idempotent. Runs its own event
    loop with :func:`asyncio.run`, so it must not be called from a coroutine.
    Works in the calling thread's network namespace.
    """
    if routes_json is None:
        undo = RouteSet()
    elif isinstance(routes_json, RouteSet):
        undo = routes_json
    else:
        undo = RouteSet.from_json(routes_json)
    asyncio.run(_cleanup(ifname, undo))
