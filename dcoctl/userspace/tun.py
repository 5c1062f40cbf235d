"""Linux tun devices for the userspace data path.

:func:`open_tun` opens ``/dev/net/tun`` and attaches it to a layer-3 tun
interface (``IFF_TUN | IFF_NO_PI``: every read or write is exactly one bare
IPv4/IPv6 packet, with no 4-byte packet-information header in front).

The device is created in the network namespace of the *calling thread* at
the moment of the ``TUNSETIFF`` ioctl; nothing here switches namespaces.
Addresses, MTU and routes are configured separately through
:mod:`dcoctl.netlink.links`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from types import TracebackType
from typing import Final, Self

from ..errors import DatapathError

__all__ = ["IFNAMSIZ", "TunDevice", "open_tun"]

TUN_PATH: Final = "/dev/net/tun"

# From <linux/if_tun.h>. The ioctl numbers are _IOW('T', 202/203, int) and
# _IOR('T', 210, unsigned int); they are the same on every Linux architecture
# dcoctl targets (the generic asm/ioctl.h layout).
TUNSETIFF: Final = 0x400454CA
TUNSETPERSIST: Final = 0x400454CB
TUNGETIFF: Final = 0x800454D2
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
IFF_PERSIST: Final = 0x0800

IFNAMSIZ: Final = 16
"""Size of the kernel's name buffer, including the terminating NUL."""

# struct ifreq is 40 bytes on 64-bit Linux: a 16-byte name followed by a
# 24-byte union whose first member, for TUNSETIFF, is the short flags word.
_IFREQ: Final = struct.Struct("16sH22x")


log = logging.getLogger(__name__)


class TunDevice:
    """An open tun interface: a non-blocking, close-on-exec file descriptor.

    Create it with :func:`open_tun`. Closing the descriptor removes the
    interface again (and with it every address and route on it) unless it
    was made persistent.

    ``read`` and ``write`` are thin wrappers around :func:`os.read` and
    :func:`os.write` for the hot path: they raise plain :class:`OSError`
    (``read`` raises :class:`BlockingIOError` when no packet is queued), so
    the caller can register :attr:`fd` with ``loop.add_reader`` and drain it.
    """

    __slots__ = ("_fd", "_name", "_persist")

    def __init__(self, fd: int, name: str, persist: bool = False) -> None:
        self._fd = fd
        self._name = name
        self._persist = persist

    @property
    def fd(self) -> int:
        """The file descriptor (``-1`` once closed)."""
        return self._fd

    @property
    def name(self) -> str:
        """The interface name the kernel assigned (``%d`` already expanded)."""
        return self._name

    @property
    def persist(self) -> bool:
        """Whether the interface outlives this descriptor (``TUNSETPERSIST``)."""
        return self._persist

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._fd < 0

    def fileno(self) -> int:
        """The file descriptor, so the device works with ``select``/``selectors``."""
        return self._fd

    def read(self, bufsize: int = 65535) -> bytes:
        """Return one packet (an IP header first).

        Raises :class:`BlockingIOError` when no packet is queued and
        :class:`OSError` for other failures (``EBADF`` once closed).
        """
        return os.read(self._fd, bufsize)

    def read_batch(self, limit: int = 64) -> list[bytes]:
        """Up to ``limit`` queued packets; a read error ends the batch (logged).

        Bounded so one busy tun never starves the control channel.
        """
        packets: list[bytes] = []
        while len(packets) < limit:
            try:
                packet = self.read()
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("reading %s failed: %s", self.name, exc)
                break
            if packet:
                packets.append(packet)
        return packets

    def write(self, packet: bytes) -> None:
        """Inject one IPv4 or IPv6 packet into the kernel as if received on the device.

        Raises :class:`OSError`, e.g. ``EINVAL`` for something that is not an
        IP packet.
        """
        # A tun write is atomic: one write() is exactly one packet, so a
        # short count would mean a truncated packet the kernel never sees.
        written = os.write(self._fd, packet)
        if written != len(packet):
            raise OSError(errno.EIO, f"short write to {self._name}: {written}/{len(packet)}")

    def set_persist(self, persist: bool) -> None:
        """Make the interface outlive the descriptor (``True``) or not (``False``).

        A persistent tun must later be removed explicitly, e.g. with
        :meth:`dcoctl.netlink.links.LinkManager.delete_link`.
        """
        try:
            fcntl.ioctl(self._fd, TUNSETPERSIST, int(persist))
        except OSError as exc:
            raise DatapathError(
                f"cannot {'set' if persist else 'clear'} persistence of tun device "
                f"{self._name}: {exc.strerror or exc}"
            ) from exc
        self._persist = persist

    def close(self) -> None:
        """Close the descriptor. Idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"TunDevice(name={self._name!r}, {state}, persist={self._persist})"


def _check_name(name: str) -> bytes:
    """Validate an interface name (template) the way the kernel's dev_valid_name does."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) >= IFNAMSIZ:
        raise DatapathError(
            f"cannot create tun device {name!r}: interface names are at most {IFNAMSIZ - 1} bytes"
        )
    if name in (".", "..") or any(c == "/" or c == ":" or c.isspace() for c in name):
        raise DatapathError(
            f"cannot create tun device {name!r}: invalid interface name "
            "(no '/', ':' or whitespace allowed)"
        )
    return raw


def _open_error(exc: OSError) -> DatapathError:
    if exc.errno == errno.ENOENT:
        hint = "the tun driver is missing (modprobe tun) or /dev/net/tun was not created"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "permission denied (needs root or CAP_NET_ADMIN)"
    elif exc.errno == errno.ENODEV:
        hint = "the tun driver is not loaded (modprobe tun)"
    else:
        hint = exc.strerror or str(exc)
    return DatapathError(f"cannot open {TUN_PATH}: {hint}")


def _setiff_error(name: str, exc: OSError) -> DatapathError:
    if exc.errno == errno.EPERM:
        hint = "operation not permitted (needs CAP_NET_ADMIN in this network namespace)"
    elif exc.errno == errno.EBUSY:
        hint = "the device is already in use by another process"
    elif exc.errno == errno.EINVAL:
        hint = "the name is invalid or taken by an interface that is not a tun device"
    elif exc.errno == errno.ENFILE:
        hint = "no free name for the template (too many devices)"
    else:
        hint = exc.strerror or str(exc)
    return DatapathError(f"cannot create tun device {name!r}: {hint}")


def open_tun(name: str = "tun%d", *, persist: bool = False) -> TunDevice:
    """Create (or attach to) the tun interface ``name`` in the current network namespace.

    ``name`` may be a template containing ``%d`` (``"tun%d"``), which the
    kernel replaces with the lowest free number; :attr:`TunDevice.name` is
    the name actually chosen. The interface starts down and unconfigured.

    With ``persist=True`` the interface survives closing the descriptor (and
    process death). An existing persistent tun of the same name is attached
    to rather than recreated, like OpenVPN does.

    Raises :class:`~dcoctl.errors.DatapathError` naming the device when
    ``/dev/net/tun`` is missing, permission is denied, the name is invalid or
    the device is busy.
    """
    raw = _check_name(name)
    try:
        # O_CLOEXEC: helper processes (scripts, ``ip``) must not inherit the
        # descriptor, or the interface would outlive the daemon.
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(exc) from exc
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(raw, IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise _setiff_error(name, exc) from exc
    actual = _IFREQ.unpack(ifr)[0].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    # When we attached to an existing persistent device it stays persistent;
    # report that truthfully instead of echoing the argument.
    try:
        flags = _IFREQ.unpack(fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size)))[1]
    except OSError:
        flags = 0
    tun = TunDevice(fd, actual, persist=bool(flags & IFF_PERSIST))
    if persist and not tun.persist:
        try:
            tun.set_persist(True)
        except DatapathError:
            tun.close()
            raise
    return tun
