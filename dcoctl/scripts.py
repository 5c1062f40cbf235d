"""OpenVPN-compatible ``up``/``down`` script execution.

Scripts get OpenVPN's arguments (``dev tun_mtu 0 local remote init``) and
the environment variables existing scripts read (``script_type``, ``dev``,
``ifconfig_local``, ``foreign_option_N`` ...), so they run unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@:/ =+,-]")


def safe_value(value: str) -> str:
    """Remap characters OpenVPN would not pass to a script to ``_``."""
    return _UNSAFE.sub("_", value)


def run_script(
    command: str,
    args: list[str],
    env: dict[str, str],
    *,
    security: int,
    what: str,
    timeout: float = 30.0,
) -> bool:
    """Run an ``up``/``down`` style command; returns True on exit status 0.

    ``script-security`` below 2 forbids user-defined scripts, as in OpenVPN.
    """
    if security < 2:
        log.warning(
            "not running %s script %r: needs 'script-security 2' (have %d)", what, command, security
        )
        return False
    argv = shlex.split(command) + args
    full_env = dict(os.environ)
    full_env.update({k: safe_value(v) for k, v in env.items()})
    log.info("running %s script: %s", what, " ".join(shlex.quote(a) for a in argv))
    try:
        result = subprocess.run(
            argv, env=full_env, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("%s script %r failed: %s", what, command, exc)
        return False
    if result.returncode != 0:
        log.error("%s script %r exited with status %d", what, command, result.returncode)
        return False
    return True
