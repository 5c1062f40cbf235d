"""``dcoctl demo``: a complete tunnel on this machine, nothing outside it.

Two network namespaces joined by a veth pair (198.18.0.0/15), a throwaway
PKI, a server in one namespace and ``dcoctl up`` in the other; then a ping,
a short throughput figure, ``dcoctl peers``, ``dcoctl down``, and everything
removed again, also on Ctrl-C. Until dcoctl has a server mode the server is
Debian's stock ``openvpn``.
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

from .pki import make_pki
from .testbed import NetnsPair, OpenVPNServer, require_root_and_tools


def _step(text: str) -> None:
    click.echo(click.style(f"==> {text}", bold=True))


def _dcoctl(
    pair: NetnsPair, runtime_dir: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DCOCTL_RUNTIME_DIR=str(runtime_dir))
    argv = ["ip", "netns", "exec", pair.ns_client, sys.executable, "-m", "dcoctl", *args]
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


def run_demo(seconds: int = 3, keep_logs: bool = False) -> None:
    """Build the demo, show it working, tear it all down."""
    require_root_and_tools()
    workdir = Path(tempfile.mkdtemp(prefix="dcoctl-demo-"))
    runtime_dir = workdir / "run"
    try:
        _step("creating two network namespaces joined by a veth pair")
        with NetnsPair(prefix="demo") as pair:
            click.echo(
                f"    server side {pair.ns_server} {pair.server_ip}, "
                f"client side {pair.ns_client} {pair.client_ip}"
            )
            _step("creating a throwaway PKI (CA, server and client certificates)")
            pki = make_pki()
            _step("starting a stock OpenVPN 2.6 server (UDP, tls-crypt) as the peer")
            with OpenVPNServer(pair.ns_server, workdir, pki, wrap="tls-crypt") as server:
                profile = workdir / "demo.ovpn"
                profile.write_text(server.client_profile("demo", pair.server_ip))
                profile.chmod(0o600)
                _step(f"dcoctl up {profile.name}")
                up = _dcoctl(pair, runtime_dir, "up", str(profile), "--timeout", "30")
                click.echo(up.stdout.rstrip())
                try:
                    _step(f"ping {server.tunnel_ip} through the tunnel")
                    ping = pair.run(
                        pair.ns_client,
                        ["ping", "-c", "3", "-i", "0.3", server.tunnel_ip],
                        capture_output=True,
                        text=True,
                    )
                    summary = [
                        line
                        for line in ping.stdout.splitlines()
                        if re.search(r"packet loss|rtt", line)
                    ]
                    click.echo("    " + "\n    ".join(summary))
                    if ping.returncode != 0:
                        raise click.ClickException("ping through the tunnel failed")
                    _step("throughput")
                    click.echo("    " + _throughput(pair, server.tunnel_ip, seconds))
                    _step("dcoctl peers")
                    click.echo(_dcoctl(pair, runtime_dir, "peers").stdout.rstrip())
                finally:
                    _step("dcoctl down demo")
                    click.echo(
                        _dcoctl(pair, runtime_dir, "down", "demo", check=False).stdout.rstrip()
                    )
            _step("removing namespaces")
        click.echo(click.style("demo finished: everything it created is gone", fg="green"))
    finally:
        if keep_logs:
            click.echo(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
