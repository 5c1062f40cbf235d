"""Netlink adapters: typed wrappers around pyroute2.

pyroute2 ships no type information, so every use of it is confined to this
package, behind typed classes and functions. :mod:`dcoctl.netlink.links`
configures addresses, MTU and routes (rtnetlink) for both data paths.
"""
