"""The README's Python examples, run verbatim against the test server.

Each ```python block runs in its own interpreter whose only way to find the server is
$HOME/.config/sandpit/credentials.json, which `sandpit serve` wrote, as for a reader who
follows the main README.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

import sandpit

from .conftest import Server

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> List[str]:
    blocks = re.findall(r"^```python\n(.*?)^```\s*$", README.read_text(), flags=re.S | re.M)
    assert blocks, "the README has no ```python block"
    return blocks


EXPECTED = [
    # The sync example.
    ["running", "first\n", "second\n", "exit code 0", "some data", "file /root/note.txt 10", "per hour"],
    # The async example.
    ["1\n2\n3\nexit code 0"],
    # Background processes.
    ["HELLO, PROCESS\n", "tick 1\ntick 2\ntick 3\nexit code 0", "'sleep 600'], True)]", "signal 9"],
    # Errors.
    ["404 not_found sandbox no-such-sandbox not found", "invalid_input cpu"],
]


def test_every_block_is_checked() -> None:
    assert len(python_blocks()) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_readme_example(index: int, server: Server, client: sandpit.Client, tmp_path: Path) -> None:
    code = python_blocks()[index]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=server.env(),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"README block {index + 1} failed:\n{proc.stdout}\n{proc.stderr}"
    for want in EXPECTED[index]:
        assert want in proc.stdout, f"README block {index + 1}: {want!r} not in output:\n{proc.stdout}"
    # The examples clean up after themselves.
    assert list(client.list(metadata={"purpose": "readme"}, state=["provisioning", "running", "paused"])) == []
