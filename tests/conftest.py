"""Shared pytest fixtures: a throwaway PKI and a namespace pair per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dcoctl.pki import PKI, make_pki
from dcoctl.testbed import NetnsPair, require_root_and_tools


@pytest.fixture(scope="session")
def pki() -> PKI:
    """An EC P-256 PKI: CA, server ``server`` and client ``client``.

    Session-scoped; tests may add clients with ``pki.issue_client(name)``.
    """
    return make_pki(server_cn="server", clients=("client",), key_type="ec")


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """A fresh :class:`NetnsPair`, always torn down (namespaces, veth, processes)."""
    require_root_and_tools()
    with NetnsPair() as pair:
        yield pair


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test scratch directory for configs, keys and logs."""
    return tmp_path
