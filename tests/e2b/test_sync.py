"""The official e2b SDK (sync API), unchanged, against sandpit."""

import base64
import hashlib
import json
import threading
import time
import urllib.request
import uuid

import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    NotFoundException,
    Sandbox,
    SandboxException,
    SandboxQuery,
    SandboxState,
    TimeoutException,
)
from e2b.sandbox.filesystem.filesystem import FileType
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType


@pytest.fixture
def sbx(server):
    s = Sandbox.create(timeout=300)
    yield s
    s.kill()


def test_create_carries_template_timeout_envs_and_metadata(server):
    tag = uuid.uuid4().hex[:8]
    before = time.time()
    s = Sandbox.create("base", timeout=120, envs={"GLOBAL_VAR": "from-create"}, metadata={"suite": tag})
    try:
        info = s.get_info()
        assert info.sandbox_id == s.sandbox_id
        assert info.template_id == "base" and info.name == "base"
        assert info.metadata == {"suite": tag}
        assert info.state.value == "running"
        assert 100 <= info.end_at.timestamp() - before <= 140
        assert s.is_running()
        assert Sandbox.get_info(s.sandbox_id).sandbox_id == s.sandbox_id
        r = s.commands.run("echo $GLOBAL_VAR; id -un; pwd")
        assert r.stdout == "from-create\nuser\n/home/user\n"
    finally:
        assert s.kill() is True


def test_unknown_template_and_bad_key_are_clear_errors(server, monkeypatch):
    with pytest.raises(SandboxException, match="no-such-template-here"):
        Sandbox.create("no-such-template-here")
    monkeypatch.setenv("E2B_API_KEY", "sp_" + "0" * 40)
    with pytest.raises(AuthenticationException):
        Sandbox.create()


def test_list_filters_by_metadata_and_state_and_pages(server):
    tag = uuid.uuid4().hex[:8]
    a = Sandbox.create(metadata={"suite": tag, "n": "a"})
    b = Sandbox.create(metadata={"suite": tag, "n": "b"})
    try:
        seen = Sandbox.list(SandboxQuery(metadata={"suite": tag})).next_items()
        assert {x.sandbox_id for x in seen} == {a.sandbox_id, b.sandbox_id}
        one = Sandbox.list(SandboxQuery(metadata={"suite": tag, "n": "b"})).next_items()
        assert [x.sandbox_id for x in one] == [b.sandbox_id]
        # Pages of one.
        pager = Sandbox.list(SandboxQuery(metadata={"suite": tag}), limit=1)
        first = pager.next_items()
        assert len(first) == 1 and pager.has_next
        second = pager.next_items()
        assert len(second) == 1 and {first[0].sandbox_id, second[0].sandbox_id} == {a.sandbox_id, b.sandbox_id}
        assert not pager.has_next or pager.next_items() == []
        # State filter.
        assert a.pause() is True
        paused = Sandbox.list(SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED])).next_items()
        assert [x.sandbox_id for x in paused] == [a.sandbox_id]
        running = Sandbox.list(SandboxQuery(metadata={"suite": tag}, state=[SandboxState.RUNNING])).next_items()
        assert [x.sandbox_id for x in running] == [b.sandbox_id]
    finally:
        a.kill()
        b.kill()


def test_foreground_commands_env_cwd_exit_codes_and_timeout(sbx):
    r = sbx.commands.run("echo out; echo err >&2", envs={"X": "1"})
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    assert sbx.commands.run("echo $X-$Y", envs={"X": "1", "Y": "2"}).stdout == "1-2\n"
    sbx.files.make_dir("/tmp/work dir")
    assert sbx.commands.run("pwd", cwd="/tmp/work dir").stdout == "/tmp/work dir\n"
    assert sbx.commands.run("id -u", user="root").stdout == "0\n"
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo partial; exit 3")
    assert e.value.exit_code == 3 and e.value.stdout == "partial\n"
    with pytest.raises(Exception):
        sbx.commands.run("true", cwd="/does/not/exist")
    t = time.time()
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30", timeout=2)
    assert time.time() - t < 15
    # envd kills a command whose deadline passed: nothing is left running.
    time.sleep(1)
    assert not [p for p in sbx.commands.list() if "sleep 30" in " ".join(p.args)]


def test_output_streams_before_the_command_exits(sbx):
    seen = []
    start = time.time()
    r = sbx.commands.run("echo first; sleep 3; echo second", on_stdout=lambda line: seen.append((line, time.time())))
    end = time.time()
    assert [line for line, _ in seen] == ["first\n", "second\n"]
    assert seen[0][1] - start < 2.5, "the first line came only at the end"
    assert end - seen[0][1] >= 2.5
    assert r.stdout == "first\nsecond\n"


def test_background_commands_list_connect_kill_and_stdin(sbx):
    h = sbx.commands.run("for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.5; done", background=True)
    procs = {p.pid: p for p in sbx.commands.list()}
    assert h.pid in procs and procs[h.pid].cmd == "/bin/bash"
    # Attach a second time from the same SDK: the output keeps coming, and the end.
    lines = []
    again = sbx.commands.connect(h.pid)
    result = again.wait(on_stdout=lines.append)
    assert result.exit_code == 0 and "tick 10\n" in lines
    # Kill a long one by pid.
    long = sbx.commands.run("sleep 600", background=True)
    assert sbx.commands.kill(long.pid) is True
    with pytest.raises(CommandExitException) as e:
        long.wait()
    assert e.value.exit_code == -1
    assert sbx.commands.kill(long.pid) is False or long.pid not in {p.pid for p in sbx.commands.list()}
    # stdin.
    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "hello ")
    sbx.commands.send_stdin(cat.pid, "stdin\n")
    sbx.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "hello stdin\n"
    with pytest.raises(NotFoundException):
        sbx.commands.connect(999_999)


def test_files_read_write_list_exists_mkdir_rename_remove(sbx):
    info = sbx.files.write("notes/hello.txt", "hello world")
    assert info.path == "/home/user/notes/hello.txt"
    assert sbx.files.read("notes/hello.txt") == "hello world"
    blob = bytes(range(256)) * 4096
    sbx.files.write("/tmp/blob.bin", blob)
    assert sbx.files.read("/tmp/blob.bin", format="bytes") == blob
    assert b"".join(sbx.files.read("/tmp/blob.bin", format="stream")) == blob
    sbx.files.write_files([{"path": "/tmp/m/a.txt", "data": "A"}, {"path": "/tmp/m/b.txt", "data": "B"}])
    assert sbx.commands.run("cat /tmp/m/a.txt /tmp/m/b.txt").stdout == "AB"
    entries = {e.name: e for e in sbx.files.list("/tmp/m")}
    assert set(entries) == {"a.txt", "b.txt"} and entries["a.txt"].type == FileType.FILE and entries["a.txt"].size == 1
    deep = [e.path for e in sbx.files.list("/home/user", depth=2)]
    assert "/home/user/notes/hello.txt" in deep
    assert sbx.files.exists("notes/hello.txt") and not sbx.files.exists("notes/nope.txt")
    assert sbx.files.make_dir("/tmp/new/deeper") is True
    assert sbx.files.make_dir("/tmp/new/deeper") is False
    assert sbx.files.get_info("/tmp/new/deeper").type == FileType.DIR
    moved = sbx.files.rename("notes/hello.txt", "/tmp/new/hello.txt")
    assert moved.path == "/tmp/new/hello.txt" and not sbx.files.exists("notes/hello.txt")
    sbx.files.remove("/tmp/new")
    assert not sbx.files.exists("/tmp/new/hello.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/tmp/missing.txt")
    # Files written as root belong to root; the default user cannot overwrite them.
    sbx.files.write("/tmp/rootfile", "x", user="root")
    assert sbx.commands.run("stat -c %U /tmp/rootfile").stdout == "root\n"


def test_watch_dir_reports_changes(sbx):
    sbx.files.make_dir("/tmp/watched")
    handle = sbx.files.watch_dir("/tmp/watched")
    sbx.files.write("/tmp/watched/new.txt", "x")
    events = []
    deadline = time.time() + 10
    while time.time() < deadline and not any(e.name == "new.txt" for e in events):
        events += handle.get_new_events()
        time.sleep(0.2)
    handle.stop()
    assert any(e.name == "new.txt" and e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE) for e in events), events


def test_timeout_pause_connect_and_kill(server):
    s = Sandbox.create(timeout=60)
    s.files.write("/home/user/kept.txt", "survives pause")
    s.set_timeout(600)
    assert s.get_info().end_at.timestamp() - time.time() > 500
    assert s.pause() is True
    assert s.is_running() is False
    assert Sandbox.get_info(s.sandbox_id).state.value == "paused"
    assert s.pause() is False  # already paused
    resumed = Sandbox.connect(s.sandbox_id, timeout=200)
    assert resumed.sandbox_id == s.sandbox_id and resumed.is_running()
    assert resumed.files.read("/home/user/kept.txt") == "survives pause"
    assert 150 < resumed.get_info().end_at.timestamp() - time.time() <= 205
    # Connecting to a running sandbox only lengthens its timeout.
    resumed.connect(timeout=10)
    assert resumed.get_info().end_at.timestamp() - time.time() > 150
    assert resumed.kill() is True
    assert Sandbox.kill(s.sandbox_id) is False
    assert s.is_running() is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info(s.sandbox_id)


def test_projects_kyc_and_billing_apply(server):
    # A new user, member of `default`, with a key of their own: not verified, so no sandbox.
    name = "e2b-" + uuid.uuid4().hex[:8]
    status, created = server.api("POST", "/v1/users", {"name": name})
    assert status == 201, created
    key = created["api_key"]
    with pytest.raises(SandboxException, match="not a member of any project"):
        Sandbox.create(api_key=key)
    status, _ = server.api("PUT", f"/v1/projects/default/members/{name}", {"role": "member"})
    assert status == 200
    with pytest.raises(SandboxException, match="verified account"):
        Sandbox.create(api_key=key)
    status, _ = server.api("PUT", f"/v1/users/{name}/kyc", {"status": "verified"})
    assert status == 200
    mine = Sandbox.create(api_key=key, metadata={"owner": name})
    # Another project's sandbox is invisible to them.
    status, _ = server.api("POST", "/v1/projects", {"name": "other-" + name})
    assert status == 201
    status, _ = server.api("POST", f"/v1/projects/other-{name}/wallet/credit", {"amount": "5"})
    assert status == 200
    status, theirs = server.api("POST", "/v1/sandboxes?wait=true", {"project": f"other-{name}"})
    assert status == 201, theirs
    try:
        with pytest.raises(NotFoundException):
            Sandbox.get_info(theirs["id"], api_key=key)
        assert Sandbox.kill(theirs["id"], api_key=key) is False
        listed = Sandbox.list(SandboxQuery(metadata={"owner": name}), api_key=key).next_items()
        assert [x.sandbox_id for x in listed] == [mine.sandbox_id]
        assert all(x.sandbox_id != theirs["id"] for x in Sandbox.list(api_key=key).next_items())
        # Their usage is billed to the project's wallet.
        status, wallet = server.api("GET", "/v1/projects/default/wallet")
        assert status == 200 and float(wallet["burn_per_hour"]) > 0
    finally:
        mine.kill()
        server.api("DELETE", f"/v1/sandboxes/{theirs['id']}")


def test_envd_needs_the_access_token_and_routes_by_host(sbx, server):
    host = server.url.removeprefix("http://")
    body = json.dumps({"process": {"cmd": "/bin/echo", "args": ["via host"]}}).encode()
    envelope = b"\x00" + len(body).to_bytes(4, "big") + body

    def start(headers):
        req = urllib.request.Request(server.url + "/process.Process/Start", data=envelope, method="POST")
        req.add_header("Content-Type", "application/connect+json")
        for k, v in headers.items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    token = sbx._envd_access_token
    # Host-based routing: <port>-<id>.<domain>.
    status, raw = start({"Host": f"49983-{sbx.sandbox_id}.sandpit.test", "X-Access-Token": token})
    assert status == 200 and base64.b64encode(b"via host\n") in raw, raw
    # Wrong or missing token.
    status, _ = start({"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": "nope"})
    assert status == 401
    status, _ = start({"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"})
    assert status == 401
    # Unknown sandbox: the proxy's 502.
    status, raw = start({"Host": f"49983-{'0' * 20}.sandpit.test", "X-Access-Token": token})
    assert status == 502 and b"was not found" in raw
    # Signed download URLs work without the header.
    sbx.files.write("/tmp/signed.txt", "signed")
    url = sbx.download_url("/tmp/signed.txt", use_signature_expiration=60)
    req = urllib.request.Request(url)
    req.add_header("E2b-Sandbox-Id", sbx.sandbox_id)
    req.add_header("E2b-Sandbox-Port", "49983")
    with urllib.request.urlopen(req) as r:
        assert r.read() == b"signed"
    assert host
