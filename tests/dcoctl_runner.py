"""Run the real ``dcoctl`` CLI inside a test namespace.

Each test gets its own runtime directory (``DCOCTL_RUNTIME_DIR``) so tests
never see each other's instances; teardown runs ``dcoctl down`` for every
instance the test started, whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dcoctl.testbed import NetnsPair

REPO = Path(__file__).resolve().parent.parent


class DcoctlRunner:
    """``dcoctl`` commands executed with ``ip netns exec`` in one namespace."""

    def __init__(self, pair: NetnsPair, ns: str, workdir: Path) -> None:
        self.pair = pair
        self.ns = ns
        self.runtime_dir = workdir / "run"
        self.workdir = workdir
        self.started: list[str] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DCOCTL_RUNTIME_DIR"] = str(self.runtime_dir)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``dcoctl ARGS`` in the namespace; never raises on a non-zero exit."""
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "dcoctl", *args]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def write_profile(self, name: str, text: str) -> Path:
        path = self.workdir / f"{name}.ovpn"
        path.write_text(text)
        path.chmod(0o600)
        return path

    def up(
        self, profile: str, name: str, *extra: str, timeout: float = 40
    ) -> subprocess.CompletedProcess[str]:
        """Write ``profile`` and run ``dcoctl up`` on it."""
        path = self.write_profile(name, profile)
        self.started.append(name)
        return self.run("up", str(path), "--timeout", str(timeout), *extra, timeout=timeout + 30)

    def peers(self, name: str) -> dict[str, Any]:
        result = self.run("peers", name, "--json")
        assert result.returncode == 0, result.stderr
        instances: list[dict[str, Any]] = json.loads(result.stdout)
        assert len(instances) == 1
        return instances[0]

    def down(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.run("down", name)

    def log(self, name: str) -> str:
        path = self.runtime_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def links(self) -> str:
        return self.pair.run(self.ns, ["ip", "-o", "link"], capture_output=True, text=True).stdout

    def routes(self, family: str = "-4") -> str:
        return self.pair.run(
            self.ns, ["ip", family, "route"], capture_output=True, text=True
        ).stdout

    def cleanup(self) -> None:
        for name in self.started:
            self.down(name)
