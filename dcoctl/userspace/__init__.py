"""The userspace data path: a tun device driven from Python.

:mod:`dcoctl.userspace.tun` opens and owns tun interfaces; the data channel
that encrypts what is read from them lives next to it in this package.
"""
