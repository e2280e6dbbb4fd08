"""The e2b SDK in its production mode: `E2B_DOMAIN` only, so the control plane is
`https://api.<domain>` and each sandbox's envd `https://49983-<id>.<domain>`. sandpit serves
HTTPS itself (tls_cert_file, tls_key_file) on port 443 with a certificate for `*.<domain>` from
a test CA; names resolve through /etc/hosts (restored afterwards)."""

import os
import subprocess
import sys
import time
import ssl
import urllib.request

import pytest
from conftest import _bin, _clean_env

DOMAIN = "sandpit.test"


class Hosts:
    """Adds names for 127.0.0.1 to /etc/hosts; restores the file."""

    def __init__(self):
        with open("/etc/hosts") as f:
            self.original = f.read()
        self.names = []

    def add(self, name):
        self.names.append(name)
        with open("/etc/hosts", "a") as f:
            f.write(f"\n127.0.0.1 {name}\n")

    def restore(self):
        with open("/etc/hosts", "w") as f:
            f.write(self.original)


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def https_server(server):
    work = os.path.join(server.work, "tls")
    os.makedirs(work)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sandpit test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=work)
    with open(os.path.join(work, "san.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:*.{DOMAIN},DNS:{DOMAIN}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=*.{DOMAIN}", "-keyout", "server.key",
             "-out", "server.csr", cwd=work)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=work)
    hosts = Hosts()
    hosts.add(f"api.{DOMAIN}")
    home = os.path.join(work, "home")
    os.makedirs(home)
    log = os.path.join(work, "serve.log")
    env = _clean_env({
        "HOME": home,
        "SANDPIT_BOOTSTRAP_KEY": server.key,
        "SANDPIT_TLS_CERT_FILE": os.path.join(work, "server.pem"),
        "SANDPIT_TLS_KEY_FILE": os.path.join(work, "server.key"),
        "SANDPIT_E2B_DOMAIN": DOMAIN,
    })
    with open(log, "w") as out:
        proc = subprocess.Popen([_bin(), "serve", "--listen", "127.0.0.1:443", "--data-dir", server.data_dir + "-tls"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    ctx = ssl.create_default_context(cafile=os.path.join(work, "ca.pem"))
    deadline = time.time() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(f"https://api.{DOMAIN}/healthz", timeout=1, context=ctx)
                break
            except Exception:
                assert proc.poll() is None, open(log).read()
                assert time.time() < deadline, "sandpit serve (HTTPS) did not start:\n" + open(log).read()
                time.sleep(0.1)
        yield {"ca": os.path.join(work, "ca.pem"), "hosts": hosts}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        hosts.restore()


CREATE = """
from e2b import Sandbox
s = Sandbox.create(timeout=120)
assert s.get_info().sandbox_domain == "sandpit.test", s.get_info()
print(s.sandbox_id)
"""

USE = """
import sys
from e2b import Sandbox
s = Sandbox.connect(sys.argv[1])
seen = []
r = s.commands.run("echo over tls; sleep 1; echo done", on_stdout=seen.append)
assert r.stdout == "over tls\\ndone\\n" and seen == ["over tls\\n", "done\\n"], (r, seen)
s.files.write("/home/user/t.txt", "tls file")
assert s.files.read("/home/user/t.txt") == "tls file"
assert s.is_running()
assert s.pause() is True
assert not s.is_running()
resumed = Sandbox.connect(s.sandbox_id)
assert resumed.files.read("/home/user/t.txt") == "tls file"
assert Sandbox.kill(s.sandbox_id) is True
print("ok")
"""


def test_the_sdk_works_with_only_e2b_domain(https_server):
    env = {k: v for k, v in os.environ.items() if k not in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DEBUG")}
    env.update(E2B_DOMAIN=DOMAIN, SSL_CERT_FILE=https_server["ca"])

    def python(code, *args):
        r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout.strip()

    # The SDK resolves names when its connection pool is made, so each step is its own process,
    # as wildcard DNS would not need: the sandbox's name is known before the second starts.
    sandbox_id = python(CREATE)
    https_server["hosts"].add(f"49983-{sandbox_id}.{DOMAIN}")
    assert python(USE, sandbox_id) == "ok"
