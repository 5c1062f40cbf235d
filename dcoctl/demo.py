"""``dcoctl demo``: a complete tunnel on this machine, nothing outside it.

Two network namespaces joined by a veth pair (198.18.0.0/15), a throwaway
PKI, a server in one namespace and ``dcoctl up`` in the other; then a ping,
a short throughput figure, ``dcoctl peers``, ``dcoctl down``, and everything
removed again, also on Ctrl-C. Both ends are dcoctl: ``dcoctl up server.conf``
in one namespace and ``dcoctl up demo.ovpn`` in the other, from the same
OpenVPN-style configuration files a stock ``openvpn`` would read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from .pki import PKI, make_pki, make_static_key
from .testbed import NetnsPair, require_root_and_tools


def _step(text: str) -> None:
    click.echo(click.style(f"==> {text}", bold=True))


def _dcoctl(
    ns: str, runtime_dir: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DCOCTL_RUNTIME_DIR=str(runtime_dir))
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "dcoctl", *args]
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, check=False, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise click.ClickException(f"dcoctl {' '.join(args)} failed:\n{result.stderr}")
    return result


def _throughput(pair: NetnsPair, server_ip: str, seconds: int) -> str:
    if shutil.which("iperf3") is None:
        return "iperf3 not installed (apt-get install iperf3): throughput skipped"
    server = pair.popen(
        pair.ns_server,
        ["iperf3", "-s", "-1", "-B", server_ip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            probe = pair.run(
                pair.ns_server, ["ss", "-ltn", "sport = :5201"], capture_output=True, text=True
            )
            if "5201" in probe.stdout:
                break
            subprocess.run(["sleep", "0.1"], check=False)
        result = pair.run(
            pair.ns_client,
            ["iperf3", "-c", server_ip, "-t", str(seconds), "-J"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            return f"iperf3 failed: {result.stderr.strip() or result.stdout[-200:]}"
        data = json.loads(result.stdout)
        bits = data["end"]["sum_received"]["bits_per_second"]
        return f"{bits / 1e6:.0f} Mbit/s (iperf3 TCP, {seconds} s, userspace data path)"
    finally:
        server.kill()
        server.wait()


def _inline(tag: str, text: str) -> str:
    return f"<{tag}>\n{text.strip()}\n</{tag}>"


def server_config(pki: PKI, static_key: str) -> str:
    """A Debian-sample-style server.conf with inline PKI and tls-crypt."""
    return (
        "\n".join(
            [
                "port 1194",
                "proto udp",
                "dev tun",
                "topology subnet",
                "server 10.8.0.0 255.255.255.0",
                "keepalive 10 60",
                "dh none",
                "explicit-exit-notify 1",
                "verb 3",
                _inline("ca", pki.ca_cert_pem),
                _inline("cert", pki.server.cert_pem),
                _inline("key", pki.server.key_pem),
                _inline("tls-crypt", static_key),
            ]
        )
        + "\n"
    )


def client_profile(pki: PKI, name: str, server_ip: str, static_key: str) -> str:
    """The matching client .ovpn, as a provider would hand it out."""
    ident = pki.issue_client(name)
    return (
        "\n".join(
            [
                "client",
                "dev tun",
                "proto udp",
                f"remote {server_ip} 1194",
                "nobind",
                "remote-cert-tls server",
                f"verify-x509-name {pki.server.common_name} name",
                "explicit-exit-notify 1",
                "verb 3",
                _inline("ca", pki.ca_cert_pem),
                _inline("cert", ident.cert_pem),
                _inline("key", ident.key_pem),
                _inline("tls-crypt", static_key),
            ]
        )
        + "\n"
    )


def run_demo(seconds: int = 3, keep_logs: bool = False) -> None:
    """Build the demo, show it working, tear it all down."""
    require_root_and_tools()
    workdir = Path(tempfile.mkdtemp(prefix="dcoctl-demo-"))
    server_run, client_run = workdir / "run-server", workdir / "run-client"
    try:
        _step("creating two network namespaces joined by a veth pair")
        with NetnsPair(prefix="demo") as pair:
            click.echo(
                f"    server side {pair.ns_server} {pair.server_ip}, "
                f"client side {pair.ns_client} {pair.client_ip}"
            )
            _step("creating a throwaway PKI (CA, server and client certificates)")
            pki = make_pki()
            static_key = make_static_key()
            server_conf = workdir / "server.conf"
            server_conf.write_text(server_config(pki, static_key))
            profile = workdir / "demo.ovpn"
            profile.write_text(client_profile(pki, "demo", pair.server_ip, static_key))
            for path in (server_conf, profile):
                path.chmod(0o600)
            _step("dcoctl up server.conf (server namespace)")
            click.echo(
                _dcoctl(
                    pair.ns_server, server_run, "up", str(server_conf), "--timeout", "30"
                ).stdout.rstrip()
            )
            try:
                _step("dcoctl up demo.ovpn (client namespace)")
                click.echo(
                    _dcoctl(
                        pair.ns_client, client_run, "up", str(profile), "--timeout", "30"
                    ).stdout.rstrip()
                )
                _step("ping 10.8.0.1 through the tunnel")
                ping = pair.run(
                    pair.ns_client,
                    ["ping", "-c", "3", "-i", "0.3", "10.8.0.1"],
                    capture_output=True,
                    text=True,
                )
                summary = [
                    line for line in ping.stdout.splitlines() if re.search(r"packet loss|rtt", line)
                ]
                click.echo("    " + "\n    ".join(summary))
                if ping.returncode != 0:
                    raise click.ClickException("ping through the tunnel failed")
                _step("throughput")
                click.echo("    " + _throughput(pair, "10.8.0.1", seconds))
                _step("dcoctl peers (client side)")
                click.echo(_dcoctl(pair.ns_client, client_run, "peers").stdout.rstrip())
                _step("dcoctl peers (server side)")
                click.echo(_dcoctl(pair.ns_server, server_run, "peers").stdout.rstrip())
            finally:
                _step("dcoctl down demo; dcoctl down server")
                for ns, run, name in (
                    (pair.ns_client, client_run, "demo"),
                    (pair.ns_server, server_run, "server"),
                ):
                    click.echo(_dcoctl(ns, run, "down", name, check=False).stdout.rstrip())
            _step("removing namespaces")
        click.echo(click.style("demo finished: everything it created is gone", fg="green"))
    finally:
        if keep_logs:
            click.echo(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
