"""The sync client against a real server."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Dict, List

import httpx
import pytest

import sandpit
from sandpit import Client, Sandbox

from .conftest import Server


# -- lifecycle --------------------------------------------------------------------------------


def test_create_waits_until_running(client: Client, run_tag: Dict[str, str]) -> None:
    with client.create(metadata=run_tag, cpu="0.5", memory="256Mi", env={"GREETING": "hi"}) as sb:
        assert isinstance(sb, Sandbox)
        assert sb.state == "running"
        assert sb.is_running and not sb.is_final
        assert len(sb.id) == 20
        assert sb.cpu == "500m" and sb.memory == "256Mi"
        assert sb.image == "sandpit/busybox:latest"
        assert sb.metadata == run_tag
        assert sb.project == "default"
        assert sb.created_at.tzinfo is not None and sb.started_at is not None
        assert sb.exec("echo $GREETING").stdout == "hi\n"
    assert sb.state == "terminated" and sb.state_reason == "deleted"


def test_create_without_wait_then_wait(client: Client, run_tag: Dict[str, str]) -> None:
    with client.create(metadata=run_tag, wait=False) as sb:
        assert sb.state in ("provisioning", "running")
        assert sb.wait("running", timeout=60) is sb
        assert sb.state == "running"


def test_get_by_id_and_name(client: Client, run_tag: Dict[str, str]) -> None:
    name = "sdk-" + run_tag["sdk-test"]
    with client.create(name=name, metadata=run_tag) as sb:
        assert sb.name == name
        assert client.get(sb.id) == sb.refresh()
        assert client.get(name).id == sb.id


def test_list_filters_and_pages(client: Client, run_tag: Dict[str, str]) -> None:
    created: List[Sandbox] = [client.create(metadata=run_tag, wait=False) for _ in range(3)]
    try:
        found = list(client.list(metadata=run_tag))
        assert [s.id for s in found] == [s.id for s in reversed(created)]  # newest first
        assert all(isinstance(s, Sandbox) for s in found)
        # Pagination: one per page still finds all three.
        assert [s.id for s in client.list(metadata=run_tag, page_size=1)] == [s.id for s in found]
        assert len(list(client.list(metadata=run_tag, limit=2))) == 2
        page = client.list_page(metadata=run_tag, limit=2)
        assert len(page.items) == 2 and page.next_cursor
        rest = client.list_page(metadata=run_tag, limit=2, cursor=page.next_cursor)
        assert [s.id for s in page.items + rest.items] == [s.id for s in found]
        assert rest.next_cursor is None
        # Metadata filters need every label; other labels do not match.
        assert list(client.list(metadata={**run_tag, "other": "x"})) == []
        created[0].wait(timeout=60)
        created[0].delete()
        running = {s.id for s in client.list(metadata=run_tag, state=["running", "provisioning"])}
        assert running == {created[1].id, created[2].id}
        assert [s.id for s in client.list(metadata=run_tag, state="terminated")] == [created[0].id]
    finally:
        for sb in created:
            sb.delete()


def test_pause_resume_keeps_files(sandbox: Sandbox) -> None:
    sandbox.files.write("/root/kept.txt", "before pause\n")
    assert sandbox.pause() is sandbox
    assert sandbox.state == "paused" and sandbox.paused_at is not None
    assert sandbox.remaining_s is not None and sandbox.remaining_s > 0
    with pytest.raises(sandpit.WrongState) as e:
        sandbox.exec("true")
    assert e.value.status == 409 and e.value.code == "wrong_state" and e.value.state == "paused"
    with pytest.raises(sandpit.WrongState):
        sandbox.pause()
    sandbox.resume()
    assert sandbox.state == "running" and sandbox.state_reason == "resumed"
    assert sandbox.files.read_text("/root/kept.txt") == "before pause\n"
    assert sandbox.exec("cat /root/kept.txt").stdout == "before pause\n"


def test_set_timeout(sandbox: Sandbox) -> None:
    before = datetime.now(timezone.utc)
    sandbox.set_timeout(120)
    assert sandbox.timeout_s == 120
    assert sandbox.ends_at is not None
    assert before + timedelta(seconds=100) < sandbox.ends_at < before + timedelta(seconds=140)
    sandbox.set_timeout(timedelta(minutes=5))
    assert sandbox.timeout_s == 300
    with pytest.raises(sandpit.InvalidRequest) as e:
        sandbox.set_timeout(0)
    assert e.value.field == "timeout_s" and e.value.code == "invalid_input"


def test_delete_is_idempotent(client: Client, run_tag: Dict[str, str]) -> None:
    sb = client.create(metadata=run_tag)
    sb.delete()
    assert sb.state == "terminated" and sb.is_final and sb.terminated_at is not None
    sb.delete()  # an ended sandbox: still fine
    assert client.get(sb.id).state == "terminated"
    with pytest.raises(sandpit.WrongState):
        sb.resume()


def test_workload_exit_and_keep_running(client: Client, run_tag: Dict[str, str]) -> None:
    sb = client.create(metadata=run_tag, command=["sh", "-c", "echo bye; exit 4"])
    assert sb.wait("terminated", timeout=30).state == "terminated"
    assert sb.exit_code == 4 and sb.state_reason == "exit"
    with client.create(metadata=run_tag, command="echo done", keep_running=True) as kept:
        assert kept.keep_running
        time.sleep(0.5)
        assert kept.refresh().state == "running"
        assert kept.exec("echo still here").stdout == "still here\n"


# -- exec -------------------------------------------------------------------------------------


def test_exec_results(sandbox: Sandbox) -> None:
    r = sandbox.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, "out\n", "err\n", False)
    assert r.pid > 0 and r.signal is None and not r.timed_out
    r = sandbox.exec(["sh", "-c", 'printf "%s|" "$@"', "sh", "a b", "c"])
    assert r.ok and r.stdout == "a b|c|"
    assert sandbox.exec("echo $FOO-$BAR", env={"FOO": "x", "BAR": 2}).stdout == "x-2\n"
    assert sandbox.exec("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.exec("cat; echo", stdin="from stdin").stdout == "from stdin\n"
    assert sandbox.exec("tr a-z A-Z", stdin=b"bytes in").stdout == "BYTES IN"
    assert sandbox.exec("id -u").stdout == "0\n"
    assert sandbox.exec("id -u", user="nobody").stdout.strip() == "65534"


def test_exec_timeout(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    r = sandbox.exec("sleep 30", timeout_s=1)
    assert time.monotonic() - t0 < 10
    assert r.timed_out and r.exit_code is None and r.signal == 9


def test_exec_invalid(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError):
        sandbox.exec([])
    with pytest.raises(sandpit.InvalidRequest) as e:
        sandbox.exec("")
    assert e.value.field == "shell"
    with pytest.raises(sandpit.InvalidRequest) as t:
        sandbox.exec("true", timeout_s=0)
    assert t.value.field == "timeout_s"
    with pytest.raises(sandpit.InvalidRequest, match="No such file"):
        sandbox.exec(["/no/such/binary"])
    with pytest.raises(sandpit.InvalidRequest, match="does not exist"):
        sandbox.exec("pwd", cwd="/nonexistent")


def test_exec_stream_output_arrives_before_exit(sandbox: Sandbox) -> None:
    """A command that prints a line and then sleeps is seen before it exits."""
    t0 = time.monotonic()
    with sandbox.exec_stream(["sh", "-c", "echo first; sleep 3; echo second"]) as stream:
        assert stream.pid is not None and stream.pid > 0
        seen = []
        for chunk in stream:
            seen.append((time.monotonic() - t0, chunk, stream.done, stream.exit_code))
    assert [c.text for _, c, _, _ in seen] == ["first\n", "second\n"]
    first_at, first, done_then, code_then = seen[0]
    assert first.stream == "stdout"
    assert first_at < 2.0, f"first line only after {first_at:.2f} s"
    assert not done_then and code_then is None  # still running when the line arrived
    assert seen[1][0] >= 2.5  # the second line came after the sleep
    assert stream.done and stream.exit_code == 0
    assert time.monotonic() - t0 >= 3.0


def test_exec_stream_stderr_exit_code_and_wait(sandbox: Sandbox) -> None:
    stream = sandbox.exec_stream("echo a; echo b >&2; exit 7")
    result = stream.wait()
    assert result.exit_code == 7 and result.stdout == "a\n" and result.stderr == "b\n"
    assert result.pid == stream.pid
    # Binary output survives (base64 on the wire).
    with sandbox.exec_stream("printf '\\000\\001\\377'", keep_output=False) as s:
        data = b"".join(c.data for c in s)
    assert data == b"\x00\x01\xff" and s.wait().stdout == ""


def test_exec_callbacks_stream(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    got: List[float] = []
    errs: List[str] = []
    r = sandbox.exec(
        "echo one; sleep 2; echo two >&2",
        on_stdout=lambda c: got.append(time.monotonic() - t0),
        on_stderr=lambda c: errs.append(c.text),
    )
    assert got and got[0] < 1.5 and errs == ["two\n"]
    assert r.stdout == "one\n" and r.stderr == "two\n" and r.ok


def test_exec_stream_close_early_ends_command(sandbox: Sandbox) -> None:
    # Closing the stream ends the command at once, a silent one too (not at its next output).
    for line in ("while true; do echo tick; sleep 0.2; done", "echo tick; exec sleep 600"):
        with sandbox.exec_stream(line) as s:
            assert next(iter(s)).text == "tick\n"
            pid = s.pid
        closed = time.monotonic()
        while sandbox.exec(f"kill -0 {pid}").ok and time.monotonic() < closed + 10:
            time.sleep(0.2)
        assert not sandbox.exec(f"kill -0 {pid}").ok
        assert time.monotonic() - closed < 5, line


def test_exec_background(sandbox: Sandbox) -> None:
    pid = sandbox.exec_background("sleep 60")
    assert pid > 0
    assert sandbox.exec(f"kill -0 {pid}").ok  # it keeps running
    sandbox.exec(f"kill {pid}")


# -- processes --------------------------------------------------------------------------------


def test_background_stdin_attach_and_wait(sandbox: Sandbox) -> None:
    pid = sandbox.exec_background(["cat"], keep_stdin_open=True)
    assert pid > 0
    sandbox.send_stdin(pid, "hello ")
    sandbox.send_stdin(pid, b"\xc3\xa9t\xc3\xa9\n")  # bytes travel as base64
    [info] = [p for p in sandbox.processes() if p.pid == pid]
    assert info.running and info.argv == ["cat"] and not info.workload
    sandbox.close_stdin(pid)
    with sandbox.attach(pid) as stream:
        assert stream.pid == pid
        text = b"".join(c.data for c in stream).decode()
    assert text == "hello \u00e9t\u00e9\n" and stream.exit_code == 0
    result = sandbox.wait_process(pid)
    assert (result.pid, result.exit_code, result.stdout) == (pid, 0, "hello \u00e9t\u00e9\n")
    with pytest.raises(sandpit.InvalidRequest):
        sandbox.send_stdin(pid, "too late")  # its stdin is closed
    # Initial stdin, then more, closing in the same call; wait() on an attached stream.
    pid = sandbox.exec_background("cat", stdin="first\n", keep_stdin_open=True)
    sandbox.send_stdin(pid, "second\n", close=True)
    assert sandbox.attach(pid).wait().stdout == "first\nsecond\n"
    # Without keep_stdin_open there is no stdin to write to.
    pid = sandbox.exec_background("sleep 30")
    with pytest.raises(sandpit.InvalidRequest):
        sandbox.send_stdin(pid, "x")
    sandbox.signal(pid)


def test_attach_streams_before_exit(sandbox: Sandbox) -> None:
    pid = sandbox.exec_background("echo one; sleep 1; echo two; exit 3")
    seen = []
    with sandbox.attach(pid) as stream:
        for chunk in stream:
            seen.append((chunk.text, stream.done))
    assert [t for t, _ in seen] == ["one\n", "two\n"]
    assert seen[0][1] is False  # "one" arrived while the command still ran
    assert stream.done and stream.exit_code == 3 and stream.signal is None
    # Its output stays available for a while after it exited.
    result = sandbox.wait_process(pid)
    assert (result.exit_code, result.stdout) == (3, "one\ntwo\n")
    assert sandbox.attach(pid).wait().exit_code == 3


def test_closing_attach_leaves_process_running(sandbox: Sandbox) -> None:
    pid = sandbox.exec_background("while true; do echo tick; sleep 0.2; done")
    with sandbox.attach(pid) as stream:
        assert next(iter(stream)).text == "tick\n"
    time.sleep(0.5)
    [info] = [p for p in sandbox.processes() if p.pid == pid]
    assert info.running
    sandbox.signal(pid, 15)
    result = sandbox.wait_process(pid)
    assert result.exit_code is None and result.signal == 15


def test_processes_and_signal(sandbox: Sandbox) -> None:
    pid = sandbox.exec_background("sleep 600")
    procs = {p.pid: p for p in sandbox.processes()}
    info = procs[pid]
    assert isinstance(info, sandpit.ProcessInfo)
    assert info.running and not info.workload and info.exit_code is None and info.signal is None
    assert info.argv == ["/bin/sh", "-c", "sleep 600"] and info.uid == 0 and info.cwd
    assert info.started_at.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - info.started_at).total_seconds()) < 60
    sandbox.signal(pid, "KILL")
    deadline = time.monotonic() + 10
    while True:
        info = {p.pid: p for p in sandbox.processes()}[pid]
        if not info.running or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not info.running and info.signal == 9 and info.exit_code is None
    with pytest.raises(sandpit.InvalidRequest) as bad:
        sandbox.signal(pid, "BOGUS")
    assert bad.value.field == "signal" and bad.value.status == 400


def test_process_errors(sandbox: Sandbox) -> None:
    pid = sandbox.exec_background("sleep 600")
    with pytest.raises(sandpit.InvalidRequest) as bad:
        sandbox.signal(pid, "NOPE")
    assert (bad.value.code, bad.value.field) == ("invalid_input", "signal")
    unknown = 999_999
    with pytest.raises(sandpit.NotFound):
        sandbox.signal(unknown)
    with pytest.raises(sandpit.NotFound):
        sandbox.send_stdin(unknown, "x")
    with pytest.raises(sandpit.NotFound):
        sandbox.close_stdin(unknown)
    with pytest.raises(sandpit.NotFound):
        sandbox.attach(unknown)
    with pytest.raises(sandpit.NotFound):
        sandbox.wait_process(unknown)
    sandbox.signal(pid, "SIGKILL")
    assert sandbox.wait_process(pid).signal == 9


def test_workload_is_listed(client: Client, run_tag: Dict[str, str]) -> None:
    with client.create(metadata=run_tag, command=["sleep", "600"]) as sb:
        [workload] = [p for p in sb.processes() if p.workload]
        assert workload.argv == ["sleep", "600"] and workload.running


# -- files ------------------------------------------------------------------------------------


def test_files_round_trip(sandbox: Sandbox, tmp_path: Path) -> None:
    files = sandbox.files
    blob = os.urandom(3 * 1024 * 1024 + 17)
    entry = files.write("/root/data/blob.bin", blob, mode=0o600)
    assert entry.path == "/root/data/blob.bin" and entry.size == len(blob)
    assert entry.is_file and entry.mode == 0o600 and entry.name == "blob.bin"
    assert files.read("/root/data/blob.bin") == blob
    assert sandbox.exec("md5sum /root/data/blob.bin").stdout.split()[0] == __import__("hashlib").md5(blob).hexdigest()

    # Streaming both ways with a bigger file.
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024))
    assert files.upload(src, "/root/data/big.bin").size == src.stat().st_size
    dest = tmp_path / "back.bin"
    assert files.download("/root/data/big.bin", dest) == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    chunks = list(files.iter_read("/root/data/big.bin", chunk_size=1 << 20))
    assert len(chunks) >= 2 and b"".join(chunks) == src.read_bytes()
    # An iterator of chunks is streamed too.
    files.write("/root/data/gen.txt", (f"line {i}\n".encode() for i in range(1000)))
    assert files.read_text("/root/data/gen.txt").count("\n") == 1000

    # Text, append, relative paths (to the home directory).
    files.write("notes.txt", "one\n")
    files.write("notes.txt", "two\n", append=True)
    assert files.read_text("/root/notes.txt") == "one\ntwo\n"


def test_files_list_stat_mkdir_move_remove(sandbox: Sandbox) -> None:
    files = sandbox.files
    d = files.mkdir("/root/a/b/c")
    assert d.is_dir and d.path == "/root/a/b/c"
    files.write("/root/a/b/f.txt", b"x")
    assert [e.name for e in files.list("/root/a")] == ["b"]
    deep = {e.path for e in files.list("/root/a", depth=3)}
    assert deep == {"/root/a/b", "/root/a/b/c", "/root/a/b/f.txt"}
    st = files.stat("/root/a/b/f.txt")
    assert st.size == 1 and st.kind == "file" and st.owner == "root"
    assert files.exists("/root/a/b") and not files.exists("/root/nope")
    moved = files.move("/root/a/b/f.txt", "/root/a/g.txt")
    assert moved.path == "/root/a/g.txt" and not files.exists("/root/a/b/f.txt")
    with pytest.raises(sandpit.InvalidRequest):
        files.remove("/root/a")  # not empty
    files.remove("/root/a/g.txt")
    files.remove("/root/a", recursive=True)
    assert not files.exists("/root/a")
    with pytest.raises(sandpit.NotFound) as e:
        files.read("/root/a/g.txt")
    assert e.value.code == "not_found" and e.value.status == 404
    with pytest.raises(sandpit.NotFound):
        files.stat("/root/a")
    with pytest.raises(sandpit.InvalidRequest) as bad:
        files.write("/root/x", b"", mode="99")
    assert bad.value.field == "mode"


# -- logs and events --------------------------------------------------------------------------


def test_logs_follow_and_page(client: Client, run_tag: Dict[str, str]) -> None:
    sb = client.create(
        metadata=run_tag, command=["sh", "-c", "echo hello-log; echo oops >&2; sleep 1; echo later"], wait=False
    )
    t0 = time.monotonic()
    with sb.logs(follow=True) as stream:
        entries = list(stream)
    assert time.monotonic() - t0 < 30
    assert stream.end_state == "terminated"
    texts = [(e.stream, e.text) for e in entries]
    assert ("stdout", "hello-log\n") in texts and ("stderr", "oops\n") in texts and ("stdout", "later\n") in texts
    assert texts.index(("stdout", "hello-log\n")) < texts.index(("stdout", "later\n"))
    assert any(e.stream == "system" and "exited with code 0" in e.text for e in entries)
    assert all(e.at.tzinfo is not None for e in entries)

    page = sb.logs()
    assert isinstance(page, sandpit.LogsPage)
    assert page.text == "hello-log\noops\nlater\n" and not page.skipped
    assert sb.logs(offset=page.next_offset).entries == []
    small = sb.logs(limit_bytes=1)
    assert 1 <= len(small.entries) < len(page.entries)
    # Resuming a followed log from an offset gives only what came after.
    assert [e.text for e in sb.logs(follow=True, offset=page.next_offset)] == []


def test_events(client: Client, run_tag: Dict[str, str]) -> None:
    sb = client.create(metadata=run_tag)
    events = sb.events()
    first = next(events)
    assert first.kind == "state" and first.state == "provisioning" and first.seq == 1
    sb.pause()
    sb.resume()
    sb.delete()
    rest = list(events)
    states = [e.state for e in rest if e.kind == "state"]
    assert states == ["running", "paused", "running", "terminated"]
    assert rest[-1].reason == "deleted"
    assert [e.seq for e in [first] + rest] == sorted(e.seq for e in [first] + rest)
    # History after a sequence number.
    assert [e.state for e in sb.events(after=3)] == ["running", "terminated"]


# -- catalogs and billing ---------------------------------------------------------------------


def test_gpus_and_gpu_sandboxes(client: Client, run_tag: Dict[str, str]) -> None:
    gpus = {g.type: g for g in client.gpus()}
    assert set(gpus) == {"H100", "T4"}
    assert gpus["H100"].total == 2 and gpus["H100"].simulated and gpus["H100"].memory == "80Gi"
    assert gpus["T4"].free_whole == 2 and gpus["T4"].free_50 == 4
    a = client.create(metadata=run_tag, gpu="H100")
    b = client.create(metadata=run_tag, gpu=sandpit.GpuRequest("H100", fraction=50))
    try:
        assert a.gpu == sandpit.GpuRequest("H100", 1, 100)
        assert b.gpu is not None and b.gpu.fraction == 50
        h100 = {g.type: g for g in client.gpus()}["H100"]
        assert h100.free_whole == 0 and h100.free_50 == 1
        with pytest.raises(sandpit.NoGpuCapacity) as e:
            client.create(metadata=run_tag, gpu="H100")
        assert e.value.status == 507 and e.value.code == "no_gpu_capacity"
    finally:
        a.delete()
        b.delete()
    assert {g.type: g for g in client.gpus()}["H100"].free_whole == 2
    with pytest.raises(sandpit.InvalidRequest) as bad:
        client.create(metadata=run_tag, gpu="H100:3")
    assert bad.value.field == "gpu.count"
    with pytest.raises(sandpit.InvalidRequest) as unknown:
        client.create(metadata=run_tag, gpu={"type": "V100"})
    assert unknown.value.field == "gpu.type"
    with pytest.raises(ValueError):
        client.create(gpu="H100:two")


def test_images(client: Client) -> None:
    images = client.images()
    busybox = {i.name: i for i in images.curated}["busybox"]
    assert busybox.reference == "sandpit/busybox:latest" and busybox.available
    assert any("sandpit/busybox:latest" in i.references for i in images.local)
    assert all(i.imported_at.tzinfo is not None for i in images.local)


def test_estimate(client: Client) -> None:
    e = client.estimate(cpu=2, memory="4Gi", gpu="H100@50%")
    assert e.currency == "USD" and e.gpu_model == "H100"
    assert e.gpu_per_hour == Decimal("1.5") and e.cpu_per_hour == Decimal("0.08")
    assert e.running_per_hour == e.gpu_per_hour + e.cpu_per_hour + e.memory_per_hour
    assert e.paused_per_hour > 0
    cpu_only = client.estimate(cpu="500m")
    assert cpu_only.gpu_model is None and cpu_only.gpu_per_hour == 0
    with pytest.raises(sandpit.InvalidRequest) as bad:
        client.estimate(memory="lots")
    assert bad.value.field == "memory"


def test_me_wallet_usage(client: Client) -> None:
    me = client.me()
    assert me.user.name == "admin" and me.user.role == "admin" and me.user.kyc == "verified"
    assert [p.project for p in me.projects] == ["default"] and me.key.name == "bootstrap"
    w = client.wallet("default")
    assert w.project == "default" and w.currency == "USD"
    assert Decimal(0) < w.balance <= Decimal(100) and w.balance_micros == int(w.balance * 1_000_000)
    with pytest.raises(sandpit.NotFound):
        client.wallet("no-such-project")
    u = client.usage(project="default")
    assert u.currency == "USD" and u.start < u.end
    assert sum(u.by_resource.values(), Decimal(0)) == u.total
    u2 = client.usage(datetime.now(timezone.utc) - timedelta(days=1), project="default")
    assert u2.total <= u.total
    csv = client.usage_csv(project="default")
    assert csv.splitlines()[0].startswith("id,project,sandbox,resource")
    with pytest.raises(sandpit.InvalidRequest):
        client.usage("not a date")


# -- errors -----------------------------------------------------------------------------------


def test_not_found(client: Client) -> None:
    with pytest.raises(sandpit.NotFound) as e:
        client.get("no-such-sandbox")
    err = e.value
    assert isinstance(err, sandpit.SandpitError)
    assert (err.status, err.code) == (404, "not_found")
    assert "no-such-sandbox" in err.message and "not_found" in str(err)


def test_invalid_input_names_the_field(client: Client) -> None:
    with pytest.raises(sandpit.InvalidRequest) as e:
        client.create(cpu="abc")
    assert (e.value.status, e.value.code, e.value.field) == (400, "invalid_input", "cpu")
    with pytest.raises(sandpit.InvalidRequest) as m:
        client.create(memory="1Ki")
    assert m.value.field == "memory"
    with pytest.raises(sandpit.InvalidRequest) as s:
        list(client.list(state="sleeping"))
    assert s.value.field == "state"


def test_name_taken(client: Client, run_tag: Dict[str, str]) -> None:
    name = "taken-" + run_tag["sdk-test"]
    with client.create(name=name, metadata=run_tag):
        with pytest.raises(sandpit.Conflict) as e:
            client.create(name=name, metadata=run_tag)
        assert e.value.status == 409 and e.value.code == "conflict" and e.value.field == "name"


def test_bad_key_and_transport_errors(server: Server) -> None:
    with Client(server.url, "sp_not_a_real_key_000000000000") as bad:
        with pytest.raises(sandpit.AuthenticationError) as e:
            bad.me()
        assert (e.value.status, e.value.code) == (401, "unauthorized")
        assert sandpit.Unauthorized is sandpit.AuthenticationError
        assert bad.health().status == "ok"  # no key needed
    with Client("http://127.0.0.1:1", "sp_whatever_0000000000000000") as nowhere:
        with pytest.raises(sandpit.TransportError) as t:
            nowhere.gpus()
        assert t.value.status is None and t.value.code == "transport_error"
        assert isinstance(t.value.__cause__, httpx.HTTPError)


def test_kyc_required_and_insufficient_funds(server: Server, client: Client) -> None:
    # A new user (unverified) with a project of their own, through the raw API.
    admin = {"Authorization": f"Bearer {server.api_key}"}
    name = "u" + os.urandom(4).hex()
    r = httpx.post(f"{server.url}/v1/users", json={"name": name}, headers=admin)
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    r = httpx.post(f"{server.url}/v1/projects", json={"name": name}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    with Client(server.url, key) as user:
        assert user.me().user.kyc == "unverified"
        with pytest.raises(sandpit.KycRequired) as e:
            user.create(project=name)
        assert (e.value.status, e.value.code) == (403, "kyc_required")
        assert isinstance(e.value, sandpit.PermissionDenied)
        # The admin's own project, with an empty wallet, cannot pay.
        with pytest.raises(sandpit.NotFound):
            user.wallet("default")  # not theirs
    poor = "p" + os.urandom(4).hex()
    assert httpx.post(f"{server.url}/v1/projects", json={"name": poor}, headers=admin).status_code == 201
    assert client.wallet(poor).balance == 0
    with pytest.raises(sandpit.InsufficientFunds) as f:
        client.create(project=poor)
    assert (f.value.status, f.value.code) == (402, "insufficient_funds")


def test_stream_errors_are_raised_at_open(sandbox: Sandbox) -> None:
    sandbox.pause()
    with pytest.raises(sandpit.WrongState):
        sandbox.exec_stream("true")
    with pytest.raises(sandpit.WrongState):
        sandbox.files.iter_read("/root/x")
    sandbox.resume()
    with pytest.raises(sandpit.NotFound):
        sandbox.files.iter_read("/root/no-such-file")
