"""Sans-I/O OpenVPN 2.x protocol core.

Nothing in this package opens a socket, reads a clock or sleeps: every entry
point takes bytes and an explicit ``now`` (seconds, float) and returns bytes to
send, the next timer deadline and typed events (see :mod:`.events`).
"""
