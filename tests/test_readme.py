"""The README's Quick start stays exactly two commands, and CI runs the second."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.+?)```", section, re.S)]


def test_quick_start_has_two_commands_and_ci_runs_the_tests() -> None:
    demo, tests = quick_start_commands()
    assert demo.endswith("dcoctl demo") and "\n" not in demo
    assert tests.endswith("python -m pytest") and "\n" not in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
