"""The official e2b SDK (async API), unchanged, against sandpit."""

import asyncio
import time
import uuid

import pytest
from e2b import AsyncSandbox, CommandExitException, FileNotFoundException, NotFoundException, SandboxQuery
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType


async def test_async_lifecycle_commands_and_files(server):
    tag = uuid.uuid4().hex[:8]
    s = await AsyncSandbox.create(timeout=120, envs={"G": "global"}, metadata={"suite": tag})
    try:
        assert await s.is_running()
        info = await s.get_info()
        assert info.metadata == {"suite": tag} and info.template_id == "base"
        listed = await AsyncSandbox.list(SandboxQuery(metadata={"suite": tag})).next_items()
        assert [x.sandbox_id for x in listed] == [s.sandbox_id]

        r = await s.commands.run("echo $G $L; pwd", envs={"L": "local"}, cwd="/tmp")
        assert r.stdout == "global local\n/tmp\n"
        with pytest.raises(CommandExitException) as e:
            await s.commands.run("exit 7")
        assert e.value.exit_code == 7

        await s.files.write("/tmp/a/b.txt", "async data")
        assert await s.files.read("/tmp/a/b.txt") == "async data"
        assert [x.name for x in await s.files.list("/tmp/a")] == ["b.txt"]
        assert await s.files.exists("/tmp/a/b.txt") and not await s.files.exists("/tmp/a/c.txt")
        assert await s.files.make_dir("/tmp/a/d") is True
        assert await s.files.make_dir("/tmp/a/d") is False
        await s.files.rename("/tmp/a/b.txt", "/tmp/a/d/b.txt")
        await s.files.remove("/tmp/a/d")
        with pytest.raises(FileNotFoundException):
            await s.files.read("/tmp/a/d/b.txt")

        await s.set_timeout(500)
        assert (await s.get_info()).end_at.timestamp() - time.time() > 400
    finally:
        assert await s.kill() is True
    assert await AsyncSandbox.kill(s.sandbox_id) is False


async def test_async_output_streams_before_exit(server):
    s = await AsyncSandbox.create()
    try:
        seen = []
        start = time.time()
        r = await s.commands.run("echo first; sleep 3; echo second", on_stdout=lambda line: seen.append((line, time.time())))
        assert [line for line, _ in seen] == ["first\n", "second\n"]
        assert seen[0][1] - start < 2.5, "the first line came only at the end"
        assert r.stdout == "first\nsecond\n"

        # Background, list, connect, kill, stdin.
        h = await s.commands.run("sleep 600", background=True)
        assert h.pid in [p.pid for p in await s.commands.list()]
        assert await s.commands.kill(h.pid) is True
        with pytest.raises(CommandExitException):
            await h.wait()
        cat = await s.commands.run("cat", background=True, stdin=True)
        await s.commands.send_stdin(cat.pid, "from async\n")
        await s.commands.close_stdin(cat.pid)
        assert (await cat.wait()).stdout == "from async\n"
        ticker = await s.commands.run("for i in 1 2 3; do echo t$i; sleep 0.3; done", background=True)
        again = await s.commands.connect(ticker.pid)
        assert "t3" in (await again.wait()).stdout
    finally:
        await s.kill()


async def test_async_watch_dir_streams_events(server):
    s = await AsyncSandbox.create()
    try:
        await s.files.make_dir("/tmp/w")
        got = asyncio.Event()
        events = []

        def on_event(e):
            events.append(e)
            if e.name == "f.txt":
                got.set()

        handle = await s.files.watch_dir("/tmp/w", on_event=on_event)
        await s.files.write("/tmp/w/f.txt", "x")
        await asyncio.wait_for(got.wait(), 10)
        await handle.stop()
        assert any(e.name == "f.txt" and e.type == FilesystemEventType.CREATE for e in events), events
    finally:
        await s.kill()


async def test_async_pause_and_connect_resume(server):
    s = await AsyncSandbox.create()
    try:
        await s.files.write("/home/user/keep.txt", "kept")
        assert await s.pause() is True
        assert await s.is_running() is False
        resumed = await AsyncSandbox.connect(s.sandbox_id, timeout=120)
        assert await resumed.is_running()
        assert await resumed.files.read("/home/user/keep.txt") == "kept"
    finally:
        await s.kill()
    with pytest.raises(NotFoundException):
        await AsyncSandbox.get_info(s.sandbox_id)
