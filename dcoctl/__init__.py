"""dcoctl: an OpenVPN 2.x compatible VPN orchestrator for Linux.

The protocol core lives in :mod:`dcoctl.protocol` (sans-I/O); the asyncio
daemon, the data paths and the CLI are thin drivers around it.
"""

__version__ = "0.1.0"
