"""A real `sandpit serve` for the e2b SDK tests, with the curated `base` image (Debian, bash,
user `user`) that e2b templates expect, and the SDK pointed at it through E2B_API_URL and
E2B_SANDBOX_URL."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bin() -> str:
    return os.environ.get("SP_BIN", os.path.join(ROOT, "target", "debug", "sandpit"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(extra: dict) -> dict:
    # `sandpit serve` reads every SANDPIT_* variable as configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDPIT_") and k != "RUST_LOG"}
    env.update(extra)
    return env


class Server:
    def __init__(self, url: str, key: str, data_dir: str, proc: subprocess.Popen, log: str):
        self.url, self.key, self.data_dir, self.proc, self.log = url, key, data_dir, proc, log

    def api(self, method: str, path: str, body=None, key=None):
        """Calls sandpit's own /v1 API; returns (status, JSON)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {key or self.key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="session")
def server():
    work = tempfile.mkdtemp(prefix="sandpit-e2b-")
    os.chmod(work, 0o711)
    data, home = os.path.join(work, "data"), os.path.join(work, "home")
    os.makedirs(home)
    built = subprocess.run([_bin(), "image", "build", "base", "--data-dir", data], env=_clean_env({"HOME": home}),
                           capture_output=True, text=True)
    assert built.returncode == 0, f"sandpit image build base failed:\n{built.stdout}\n{built.stderr}"
    # A copy of the store with `base` for the HTTPS server of the E2B_DOMAIN tests.
    subprocess.run(["cp", "-a", data, data + "-tls"], check=True)
    port = _free_port()
    key = "sp_" + secrets.token_hex(20)
    log = os.path.join(work, "serve.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [_bin(), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
            env=_clean_env({"HOME": home, "SANDPIT_BOOTSTRAP_KEY": key, "RUST_LOG": "info"}),
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except Exception:
            assert proc.poll() is None, open(log).read()
            assert time.time() < deadline, "sandpit serve did not start:\n" + open(log).read()
            time.sleep(0.1)
    os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key)
    os.environ.pop("E2B_DOMAIN", None)
    os.environ.pop("E2B_DEBUG", None)
    srv = Server(url, key, data, proc, log)
    srv.work = work
    yield srv
    # Delete what the tests left, then stop the server.
    status, page = srv.api("GET", "/v1/sandboxes?state=provisioning,running,paused&limit=1000")
    for s in (page or {}).get("items", []):
        srv.api("DELETE", f"/v1/sandboxes/{s['id']}")
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(work, ignore_errors=True)
