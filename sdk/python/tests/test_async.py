"""The async client against a real server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List

import pytest

import sandpit
from sandpit import AsyncClient, AsyncSandbox


async def test_create_get_list(aclient: AsyncClient, run_tag: Dict[str, str]) -> None:
    async with await aclient.create(metadata=run_tag, cpu=0.5, memory="256Mi", name="a-" + run_tag["sdk-test"]) as sb:
        assert isinstance(sb, AsyncSandbox)
        assert sb.state == "running" and sb.cpu == "500m"
        got = await aclient.get(sb.name or "")
        assert got.id == sb.id and got.metadata == run_tag
        other = await aclient.create(metadata=run_tag, wait=False)
        assert (await other.wait(timeout=60)).state == "running"
        ids = [s.id async for s in aclient.list(metadata=run_tag)]
        assert ids == [other.id, sb.id]
        assert [s.id async for s in aclient.list(metadata=run_tag, page_size=1)] == ids
        assert [s.id async for s in aclient.list(metadata=run_tag, limit=1)] == [other.id]
        page = await aclient.list_page(metadata=run_tag, limit=1)
        assert [s.id for s in page.items] == [other.id] and page.next_cursor
        await other.delete()
        assert other.state == "terminated"
    assert sb.state == "terminated"
    with pytest.raises(sandpit.NotFound):
        await aclient.get(sb.name or "")  # a name finds only a sandbox that has not ended
    assert (await aclient.get(sb.id)).state_reason == "deleted"


async def test_lifecycle(asandbox: AsyncSandbox) -> None:
    await asandbox.files.write("/root/kept.txt", "kept\n")
    await asandbox.pause()
    assert asandbox.state == "paused"
    with pytest.raises(sandpit.WrongState) as e:
        await asandbox.exec("true")
    assert e.value.code == "wrong_state"
    await asandbox.resume()
    assert asandbox.state == "running"
    assert await asandbox.files.read_text("/root/kept.txt") == "kept\n"
    await asandbox.set_timeout(90)
    assert asandbox.timeout_s == 90
    await asandbox.refresh()
    assert asandbox.ends_at is not None


async def test_exec(asandbox: AsyncSandbox) -> None:
    r = await asandbox.exec("echo $X; echo e >&2; exit 5", env={"X": "y"})
    assert (r.exit_code, r.stdout, r.stderr) == (5, "y\n", "e\n")
    assert (await asandbox.exec(["pwd"], cwd="/tmp")).stdout == "/tmp\n"
    assert (await asandbox.exec("cat", stdin="in")).stdout == "in"
    # Several commands at once.
    results = await asyncio.gather(*(asandbox.exec(f"sleep 0.5; echo {i}") for i in range(3)))
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n"]
    pid = await asandbox.exec_background("sleep 60")
    assert (await asandbox.exec(f"kill {pid}")).ok


async def test_exec_stream_output_arrives_before_exit(asandbox: AsyncSandbox) -> None:
    """A command that prints a line and then sleeps is seen before it exits."""
    t0 = time.monotonic()
    stream = await asandbox.exec_stream(["sh", "-c", "echo first; sleep 3; echo second"])
    assert stream.pid is not None
    seen = []
    async with stream:
        async for chunk in stream:
            seen.append((time.monotonic() - t0, chunk.text, stream.done))
    assert [t for _, t, _ in seen] == ["first\n", "second\n"]
    assert seen[0][0] < 2.0 and not seen[0][2]
    assert seen[1][0] >= 2.5
    assert stream.exit_code == 0 and time.monotonic() - t0 >= 3.0
    result = await stream.wait()
    assert result.stdout == "first\nsecond\n"


async def test_exec_callbacks(asandbox: AsyncSandbox) -> None:
    t0 = time.monotonic()
    seen: List[float] = []

    async def on_out(c: sandpit.OutputChunk) -> None:
        seen.append(time.monotonic() - t0)

    errs: List[bytes] = []
    r = await asandbox.exec("echo a; sleep 2; echo b >&2; exit 1", on_stdout=on_out, on_stderr=lambda c: errs.append(c.data))
    assert seen and seen[0] < 1.5 and errs == [b"b\n"] and r.exit_code == 1


async def test_background_stdin_attach_and_wait(asandbox: AsyncSandbox) -> None:
    pid = await asandbox.exec_background("cat", keep_stdin_open=True)
    await asandbox.send_stdin(pid, "hello\n")
    await asandbox.send_stdin(pid, b"\x00\xffbytes\n")
    assert [p.running for p in await asandbox.processes() if p.pid == pid] == [True]
    await asandbox.close_stdin(pid)
    stream = await asandbox.attach(pid)
    assert stream.pid == pid
    async with stream:
        data = b"".join([c.data async for c in stream])
    assert data == b"hello\n\x00\xffbytes\n" and stream.exit_code == 0
    result = await asandbox.wait_process(pid)
    assert result.exit_code == 0 and result.stdout.startswith("hello\n")
    pid = await asandbox.exec_background(["cat"], keep_stdin_open=True)
    await asandbox.send_stdin(pid, "x", close=True)
    assert (await asandbox.wait_process(pid)).stdout == "x"


async def test_attach_streams_before_exit(asandbox: AsyncSandbox) -> None:
    pid = await asandbox.exec_background(["sh", "-c", "echo one; sleep 1; echo two; exit 3"])
    stream = await asandbox.attach(pid)
    seen = []
    async for chunk in stream:
        seen.append((chunk.text, stream.done))
    assert [t for t, _ in seen] == ["one\n", "two\n"]
    assert seen[0][1] is False  # "one" arrived while the command still ran
    assert stream.exit_code == 3
    result = await (await asandbox.attach(pid)).wait()
    assert (result.exit_code, result.stdout) == (3, "one\ntwo\n")


async def test_processes_signal_and_errors(asandbox: AsyncSandbox) -> None:
    pid = await asandbox.exec_background("sleep 600")
    [info] = [p for p in await asandbox.processes() if p.pid == pid]
    assert info.running and info.signal is None and not info.workload
    await asandbox.signal(pid, "KILL")
    result = await asandbox.wait_process(pid)
    assert result.signal == 9 and result.exit_code is None
    [info] = [p for p in await asandbox.processes() if p.pid == pid]
    assert not info.running and info.signal == 9
    with pytest.raises(sandpit.InvalidRequest) as bad:
        await asandbox.signal(pid, "BOGUS")
    assert bad.value.field == "signal"
    with pytest.raises(sandpit.NotFound):
        await asandbox.signal(999_999)
    with pytest.raises(sandpit.NotFound):
        await asandbox.send_stdin(999_999, "x")
    with pytest.raises(sandpit.NotFound):
        await asandbox.attach(999_999)
    with pytest.raises(sandpit.NotFound):
        await asandbox.wait_process(999_999)


async def test_files(asandbox: AsyncSandbox, tmp_path: Path) -> None:
    files = asandbox.files
    blob = os.urandom(4 * 1024 * 1024 + 3)
    assert (await files.write("/root/d/blob.bin", blob, mode="640")).mode == 0o640
    assert await files.read("/root/d/blob.bin") == blob
    out = (await asandbox.exec("md5sum /root/d/blob.bin")).stdout.split()[0]
    assert out == hashlib.md5(blob).hexdigest()

    async def gen() -> AsyncIterator[bytes]:
        for i in range(100):
            yield b"%d\n" % i

    await files.write("/root/d/gen.txt", gen())
    assert (await files.read_text("/root/d/gen.txt")).splitlines()[-1] == "99"
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    await files.upload(src, "/root/d/up.bin")
    dest = tmp_path / "down.bin"
    assert await files.download("/root/d/up.bin", dest) == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    chunks = [c async for c in await files.iter_read("/root/d/up.bin", chunk_size=1 << 20)]
    assert b"".join(chunks) == src.read_bytes()

    await files.mkdir("/root/d/sub")
    assert sorted(e.name for e in await files.list("/root/d")) == ["blob.bin", "gen.txt", "sub", "up.bin"]
    assert (await files.stat("/root/d/sub")).is_dir
    await files.move("/root/d/gen.txt", "/root/d/sub/gen.txt")
    assert await files.exists("/root/d/sub/gen.txt") and not await files.exists("/root/d/gen.txt")
    with pytest.raises(sandpit.InvalidRequest):
        await files.remove("/root/d/sub")
    await files.remove("/root/d", recursive=True)
    with pytest.raises(sandpit.NotFound) as e:
        await files.stat("/root/d")
    assert e.value.status == 404


async def test_logs_and_events(aclient: AsyncClient, run_tag: Dict[str, str]) -> None:
    sb = await aclient.create(metadata=run_tag, command=["sh", "-c", "echo one; sleep 1; echo two >&2"], wait=False)
    events = await sb.events()
    stream = await sb.logs(follow=True)
    entries = [e async for e in stream]
    assert [(e.stream, e.text) for e in entries if e.stream != "system"] == [("stdout", "one\n"), ("stderr", "two\n")]
    assert stream.end_state == "terminated" and stream.offset is not None
    states = [e.state async for e in events if e.kind == "state"]
    assert states == ["provisioning", "running", "terminated"]
    page = await sb.logs()
    assert page.text == "one\ntwo\n"
    await sb.refresh()
    assert sb.exit_code == 0 and sb.state_reason == "exit"


async def test_catalogs_and_billing(aclient: AsyncClient) -> None:
    gpus = {g.type: g for g in await aclient.gpus()}
    assert gpus.keys() == {"H100", "T4"} and all(g.simulated for g in gpus.values())
    assert any(i.name == "busybox" and i.available for i in (await aclient.images()).curated)
    e = await aclient.estimate(gpu="T4", cpu="1", memory="1Gi")
    assert e.gpu_model == "T4" and e.gpu_per_hour == Decimal("0.4")
    assert (await aclient.me()).user.name == "admin"
    assert (await aclient.wallet("default")).currency == "USD"
    u = await aclient.usage(project="default")
    assert sum(u.by_project.values(), Decimal(0)) == u.total
    assert (await aclient.usage_csv()).startswith("id,")


async def test_errors(aclient: AsyncClient, server: Any) -> None:
    with pytest.raises(sandpit.NotFound) as e:
        await aclient.get("does-not-exist")
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(sandpit.InvalidRequest) as bad:
        await aclient.create(cpu="-1")
    assert bad.value.field == "cpu" and bad.value.code == "invalid_input"
    async with AsyncClient(server.url, "sp_bad_key_00000000000000000000") as bad_key:
        with pytest.raises(sandpit.AuthenticationError):
            await bad_key.gpus()
    async with AsyncClient("http://127.0.0.1:1", "sp_x_00000000000000000000") as nowhere:
        with pytest.raises(sandpit.TransportError):
            await nowhere.me()


async def test_stream_errors_are_raised_at_open(asandbox: AsyncSandbox) -> None:
    await asandbox.pause()
    with pytest.raises(sandpit.WrongState):
        await asandbox.exec_stream("true")
    with pytest.raises(sandpit.WrongState):
        await asandbox.files.iter_read("/root/x")
    await asandbox.resume()
    with pytest.raises(sandpit.NotFound):
        await asandbox.files.iter_read("/root/no-such-file")
