"""Fixtures: one real `sandpit serve` for the whole session (needs root), and clients of it.

The binary is $SP_BIN (default target/debug/sandpit of this repository). The server gets a fresh data directory and
HOME under a temporary directory, a preset bootstrap key and two simulated GPU types; its
environment holds no other SANDPIT_* variable (the server refuses unknown configuration keys).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator

import httpx
import pytest

import sandpit

DEFAULT_BIN = str(Path(__file__).resolve().parents[3] / "target" / "debug" / "sandpit")
SIMULATED_GPUS = "H100x2,T4x2"


@dataclass
class Server:
    url: str
    api_key: str
    home: Path
    data_dir: Path
    log: Path
    proc: "subprocess.Popen[bytes]"

    def env(self) -> Dict[str, str]:
        """An environment for a client process that finds this server only through
        $HOME/.config/sandpit/credentials.json (as a user of `sandpit serve` would)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDPIT_")}
        env["HOME"] = str(self.home)
        return env

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mounts_under(path: Path) -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    prefix = str(path) + "/"
    return [line.split()[1] for line in lines if len(line.split()) > 1 and line.split()[1].startswith(prefix)]


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = os.environ.get("SP_BIN") or DEFAULT_BIN
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"no sandpit binary at {binary}: set SP_BIN to one (e.g. target/debug/sandpit)")
    if os.geteuid() != 0:
        pytest.fail("`sandpit serve` needs root: run the SDK tests as root")

    root = Path(tempfile.mkdtemp(prefix="sandpit-sdk-"))
    home, data = root / "home", root / "data"
    for d in (root, home, data):
        d.mkdir(exist_ok=True)
        d.chmod(0o711)  # sandbox uids must traverse them
    key = "sp_sdktest_" + secrets.token_hex(16)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDPIT_")}
    env.update(HOME=str(home), SANDPIT_BOOTSTRAP_KEY=key, SANDPIT_SIMULATE_GPUS=SIMULATED_GPUS)
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(root),
        )
    srv = Server(f"http://127.0.0.1:{port}", key, home, data, log, proc)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sandpit serve exited with {proc.returncode}:\n{srv.log_tail()}")
        try:
            if httpx.get(f"{srv.url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"sandpit serve did not answer /healthz within 60 s:\n{srv.log_tail()}")
        time.sleep(0.1)
    try:
        yield srv
    finally:
        _delete_everything(srv)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if _mounts_under(root):
            print(f"\nleaving {root} in place: still mounted there: {_mounts_under(root)}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _delete_everything(srv: Server) -> None:
    """Deletes every sandbox that has not ended, in every project (the key is an admin's)."""
    try:
        with sandpit.Client(srv.url, srv.api_key) as c:
            for sb in list(c.list(state=["provisioning", "running", "paused"])):
                try:
                    sb.delete()
                except sandpit.SandpitError:
                    pass
    except sandpit.SandpitError as e:
        print(f"\ncould not clean up sandboxes: {e}")


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[sandpit.Client]:
    with sandpit.Client(server.url, server.api_key) as c:
        yield c


@pytest.fixture
def run_tag() -> Dict[str, str]:
    """Metadata unique to one test, to find its sandboxes."""
    return {"sdk-test": uuid.uuid4().hex[:12]}


@pytest.fixture
def sandbox(client: sandpit.Client, run_tag: Dict[str, str]) -> Iterator[sandpit.Sandbox]:
    """A running sandbox of the default image, deleted after the test."""
    sb = client.create(metadata=run_tag, timeout_s=600)
    assert sb.state == "running", sb
    try:
        yield sb
    finally:
        try:
            sb.delete()
        except sandpit.SandpitError:
            pass


@pytest.fixture
async def aclient(server: Server) -> Any:
    async with sandpit.AsyncClient(server.url, server.api_key) as c:
        yield c


@pytest.fixture
async def asandbox(aclient: sandpit.AsyncClient, run_tag: Dict[str, str]) -> Any:
    sb = await aclient.create(metadata=run_tag, timeout_s=600)
    assert sb.state == "running", sb
    try:
        yield sb
    finally:
        try:
            await sb.delete()
        except sandpit.SandpitError:
            pass
