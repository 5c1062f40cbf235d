"""The CLI's behaviour before any network is involved: errors users see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def dcoctl(*args: str, runtime: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DCOCTL_RUNTIME_DIR=str(runtime))
    return subprocess.run(
        [sys.executable, "-m", "dcoctl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def test_config_error_names_file_and_line(tmp_path: Path) -> None:
    profile = tmp_path / "office.ovpn"
    profile.write_text("client\ndev tun\nremote vpn.example.org 1194\nfrobnicate yes\n")
    result = dcoctl("up", str(profile), runtime=tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"dcoctl: {profile}:4: ")
    assert "frobnicate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_config_file(tmp_path: Path) -> None:
    result = dcoctl("up", str(tmp_path / "nope.ovpn"), runtime=tmp_path / "run")
    assert result.returncode != 0 and "nope.ovpn" in result.stderr


def test_instance_name_too_long_for_an_interface(tmp_path: Path) -> None:
    from dcoctl.pki import make_pki

    pki = make_pki()
    profile = tmp_path / "a-very-long-profile-name.ovpn"
    profile.write_text(
        "client\ndev tun\nremote 198.18.0.1\n"
        f"<ca>\n{pki.ca_cert_pem}</ca>\n<cert>\n{pki.clients['client'].cert_pem}</cert>\n"
        f"<key>\n{pki.clients['client'].key_pem}</key>\n"
    )
    result = dcoctl("up", str(profile), runtime=tmp_path / "run")
    assert result.returncode == 2
    assert "invalid instance name" in result.stderr and "--name" in result.stderr


def test_down_unknown_is_idempotent_and_peers_empty(tmp_path: Path) -> None:
    result = dcoctl("down", "ghost", runtime=tmp_path / "run")
    assert result.returncode == 0 and "not running" in result.stdout
    peers = dcoctl("peers", "--json", runtime=tmp_path / "run")
    assert peers.returncode == 0 and json.loads(peers.stdout) == []
    assert "no running instances" in dcoctl("peers", runtime=tmp_path / "run").stdout


def test_peers_of_unknown_instance_fails(tmp_path: Path) -> None:
    result = dcoctl("peers", "ghost", runtime=tmp_path / "run")
    assert result.returncode != 0 and "ghost: not running" in result.stderr


@pytest.mark.parametrize("command", ["up", "down", "peers", "demo", "genkey"])
def test_every_command_has_help(command: str, tmp_path: Path) -> None:
    result = dcoctl(command, "--help", runtime=tmp_path)
    assert result.returncode == 0 and "Usage:" in result.stdout
