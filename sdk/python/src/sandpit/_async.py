"""The asynchronous client: :class:`AsyncClient`, :class:`AsyncSandbox` and :class:`AsyncFiles`.

The same surface as the sync client (see :mod:`sandpit._sync` for the full documentation of
each method), with coroutines and async iterators.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import (
    IO,
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
    overload,
)

import httpx

from . import _core as core
from ._base import DEFAULT_TIMEOUT, _ClientConfig, _SandboxBase
from ._core import CommandSpec, GpuSpec, ImageSpec, Req, Seconds, SignalSpec, TimeBound
from ._streams import AsyncEventStream, AsyncExecStream, AsyncLogStream
from .errors import NotFound, StreamError
from .types import (
    FINAL_STATES,
    Estimate,
    ExecResult,
    FileEntry,
    GpuType,
    Health,
    Images,
    LogsPage,
    Me,
    OutputChunk,
    Page,
    ProcessInfo,
    Usage,
    Wallet,
)

__all__ = ["AsyncClient", "AsyncSandbox", "AsyncFiles"]

T = TypeVar("T")
PathLike = Union[str, "os.PathLike[str]"]
#: What an async file write accepts: bytes, text, a binary file object, or a (sync or async)
#: iterable of byte chunks.
AsyncWriteData = Union[bytes, bytearray, memoryview, str, IO[bytes], Iterable[bytes], AsyncIterable[bytes]]
#: An output callback: a function or a coroutine function.
OutputCallback = Callable[[OutputChunk], Union[None, Awaitable[None]]]

_CHUNK = 1 << 20


class AsyncClient(_ClientConfig):
    """An asynchronous client of a sandpit server; see :class:`sandpit.Client`.

    ``async with AsyncClient() as client:``, or ``await client.aclose()``.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: Union[None, float, httpx.Timeout] = DEFAULT_TIMEOUT,
        headers: Optional[Mapping[str, str]] = None,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self._configure(url, api_key, headers)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=self._timeout(timeout))

    # -- plumbing ---------------------------------------------------------------------------

    async def _send(self, call: "core.Call[T]") -> T:
        request = core.build_request(self._http, self.url, self._headers, call.req)
        try:
            response = await self._http.send(request)
        except httpx.HTTPError as e:
            raise core.transport_error(e, call.req) from e
        return core.decode(call, response)

    async def _open(self, req: Req) -> httpx.Response:
        request = core.build_request(self._http, self.url, self._headers, req)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as e:
            raise core.transport_error(e, req) from e
        if response.status_code >= 400:
            try:
                content = await response.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise core.error_for(response.status_code, content)
        return response

    def _sandbox(self, fields: Dict[str, Any]) -> "AsyncSandbox":
        sb = AsyncSandbox(**fields)
        sb._client = self
        return sb

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- sandboxes --------------------------------------------------------------------------

    async def create(
        self,
        image: Optional[ImageSpec] = None,
        *,
        cpu: Optional[Union[str, int, float]] = None,
        memory: Optional[Union[str, int]] = None,
        gpu: Optional[GpuSpec] = None,
        timeout_s: Optional[Seconds] = None,
        env: Optional[Mapping[str, Any]] = None,
        command: Optional[CommandSpec] = None,
        keep_running: Optional[bool] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        name: Optional[str] = None,
        project: Optional[str] = None,
        wait: bool = True,
    ) -> "AsyncSandbox":
        """Creates a sandbox; see :meth:`sandpit.Client.create`."""
        call = core.create_sandbox(
            image=image,
            cpu=cpu,
            memory=memory,
            gpu=gpu,
            timeout_s=timeout_s,
            env=env,
            command=command,
            keep_running=keep_running,
            metadata=metadata,
            name=name,
            project=project,
            wait=wait,
        )
        return self._sandbox(await self._send(call))

    async def get(self, sandbox_id: str) -> "AsyncSandbox":
        return self._sandbox(await self._send(core.get_sandbox(sandbox_id)))

    async def list(
        self,
        *,
        project: Optional[str] = None,
        state: Union[None, str, Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        page_size: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> AsyncIterator["AsyncSandbox"]:
        """``async for sb in client.list(...)``; see :meth:`sandpit.Client.list`."""
        filters = core.list_filters(project, state, metadata)
        cursor: Optional[str] = None
        seen = 0
        while True:
            page = await self._send(core.list_sandboxes(filters, page_size, cursor))
            for fields in page.items:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield self._sandbox(fields)
            cursor = page.next_cursor
            if not cursor or not page.items:
                return

    async def list_page(
        self,
        *,
        project: Optional[str] = None,
        state: Union[None, str, Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> "Page[AsyncSandbox]":
        filters = core.list_filters(project, state, metadata)
        page = await self._send(core.list_sandboxes(filters, limit, cursor))
        return Page([self._sandbox(f) for f in page.items], page.next_cursor)

    # -- catalogs, accounts, billing --------------------------------------------------------

    async def health(self) -> Health:
        return await self._send(core.health())

    async def gpus(self) -> List[GpuType]:
        return await self._send(core.gpus())

    async def images(self) -> Images:
        return await self._send(core.images())

    async def estimate(
        self,
        *,
        cpu: Optional[Union[str, int, float]] = None,
        memory: Optional[Union[str, int]] = None,
        gpu: Optional[GpuSpec] = None,
    ) -> Estimate:
        return await self._send(core.estimate(cpu, memory, gpu))

    async def me(self) -> Me:
        return await self._send(core.me())

    async def wallet(self, project: str) -> Wallet:
        return await self._send(core.wallet(project))

    async def usage(
        self,
        start: Optional[TimeBound] = None,
        end: Optional[TimeBound] = None,
        *,
        project: Optional[str] = None,
    ) -> Usage:
        return await self._send(core.usage(start, end, project))

    async def usage_csv(
        self,
        start: Optional[TimeBound] = None,
        end: Optional[TimeBound] = None,
        *,
        project: Optional[str] = None,
    ) -> str:
        return await self._send(core.usage_csv(start, end, project))


class AsyncSandbox(_SandboxBase):
    """A sandbox for the async client; see :class:`sandpit.Sandbox`. ``async with`` deletes it
    on exit."""

    _client: AsyncClient

    @property
    def files(self) -> "AsyncFiles":
        return AsyncFiles(self._client, self.id)

    async def refresh(self) -> "AsyncSandbox":
        self._update(await self._client._send(core.get_sandbox(self.id)))
        return self

    async def pause(self) -> "AsyncSandbox":
        self._update(await self._client._send(core.pause_sandbox(self.id)))
        return self

    async def resume(self) -> "AsyncSandbox":
        self._update(await self._client._send(core.resume_sandbox(self.id)))
        return self

    async def set_timeout(self, timeout_s: Seconds) -> "AsyncSandbox":
        self._update(await self._client._send(core.set_timeout(self.id, timeout_s)))
        return self

    async def delete(self) -> None:
        await self._client._send(core.delete_sandbox(self.id))
        await self.refresh()

    async def wait(
        self,
        until: Union[str, Sequence[str]] = "running",
        *,
        timeout: Optional[float] = None,
        interval: float = 0.2,
    ) -> "AsyncSandbox":
        wanted = {until} if isinstance(until, str) else set(until)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            await self.refresh()
            if self.state in wanted or self.state in FINAL_STATES:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"sandbox {self.id} is still {self.state} after {timeout} s")
            await asyncio.sleep(interval)

    # -- exec -------------------------------------------------------------------------------

    async def exec(
        self,
        command: CommandSpec,
        *,
        env: Optional[Mapping[str, Any]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[None, str, bytes] = None,
        timeout_s: Optional[Seconds] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> ExecResult:
        """Runs a command to completion; callbacks (plain or async) get the output as it is
        produced."""
        body = core.exec_body(command, env=env, cwd=cwd, user=user, stdin=stdin, timeout_s=timeout_s)
        if on_stdout is None and on_stderr is None:
            return await self._client._send(core.exec_call(self.id, body))
        stream = await self._open_exec(body, True)
        async with stream:
            async for chunk in stream:
                cb = on_stdout if chunk.stream == "stdout" else on_stderr
                if cb is not None:
                    r = cb(chunk)
                    if r is not None:
                        await r
            return await stream.wait()

    async def _open_exec(self, body: Dict[str, Any], keep_output: bool) -> AsyncExecStream:
        stream = AsyncExecStream(await self._client._open(core.exec_stream_req(self.id, body)), keep_output)
        return await stream._start()

    async def exec_stream(
        self,
        command: CommandSpec,
        *,
        env: Optional[Mapping[str, Any]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[None, str, bytes] = None,
        timeout_s: Optional[Seconds] = None,
        keep_output: bool = True,
    ) -> AsyncExecStream:
        """Starts a command; ``async for chunk in await sb.exec_stream(...)``. Closing the
        stream before the command exits ends the command at once (see
        :meth:`sandpit.Sandbox.exec_stream`)."""
        body = core.exec_body(command, env=env, cwd=cwd, user=user, stdin=stdin, timeout_s=timeout_s)
        return await self._open_exec(body, keep_output)

    async def exec_background(
        self,
        command: CommandSpec,
        *,
        env: Optional[Mapping[str, Any]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[None, str, bytes] = None,
        timeout_s: Optional[Seconds] = None,
        keep_stdin_open: bool = False,
    ) -> int:
        """Starts a command that keeps running; returns its pid. Its output is kept by the
        server: follow it with :meth:`attach` or :meth:`wait_process`. With
        ``keep_stdin_open`` its standard input stays open for :meth:`send_stdin`. See
        :meth:`sandpit.Sandbox.exec_background`."""
        body = core.exec_body(
            command,
            env=env,
            cwd=cwd,
            user=user,
            stdin=stdin,
            timeout_s=timeout_s,
            background=True,
            keep_stdin_open=keep_stdin_open,
        )
        return (await self._client._send(core.exec_call(self.id, body))).pid

    # -- processes --------------------------------------------------------------------------

    async def processes(self) -> List[ProcessInfo]:
        """The sandbox's processes, oldest first; see :meth:`sandpit.Sandbox.processes`."""
        return await self._client._send(core.list_processes(self.id))

    async def signal(self, pid: int, signal: SignalSpec = "TERM") -> None:
        """Sends a signal (a name such as ``"KILL"``, or a number) to a process and its process
        group; see :meth:`sandpit.Sandbox.signal`."""
        await self._client._send(core.signal_process(self.id, pid, signal))

    async def send_stdin(self, pid: int, data: Union[str, bytes], *, close: bool = False) -> None:
        """Writes to a process's open standard input, closing it after with ``close=True``; see
        :meth:`sandpit.Sandbox.send_stdin`."""
        await self._client._send(core.process_stdin(self.id, pid, data, close))

    async def close_stdin(self, pid: int) -> None:
        """Closes a process's standard input."""
        await self._client._send(core.process_stdin(self.id, pid, None, True))

    async def attach(self, pid: int, *, keep_output: bool = True) -> AsyncExecStream:
        """Follows a process's output (buffered since its start, then live) until it exits:
        ``async for chunk in await sb.attach(pid)``, ``await stream.wait()``. Closing the
        stream leaves the process running; see :meth:`sandpit.Sandbox.attach`."""
        stream = AsyncExecStream(await self._client._open(core.process_output_req(self.id, pid)), keep_output)
        return await stream._start()

    async def wait_process(self, pid: int) -> ExecResult:
        """Waits until a process exits and returns its result; see
        :meth:`sandpit.Sandbox.wait_process`."""
        return await self._client._send(core.process_wait(self.id, pid))

    # -- logs and events --------------------------------------------------------------------

    @overload
    async def logs(
        self, *, follow: Literal[False] = ..., offset: int = ..., limit_bytes: Optional[int] = ...
    ) -> LogsPage: ...

    @overload
    async def logs(
        self, *, follow: Literal[True], offset: int = ..., limit_bytes: Optional[int] = ...
    ) -> AsyncLogStream: ...

    async def logs(
        self, *, follow: bool = False, offset: int = 0, limit_bytes: Optional[int] = None
    ) -> Union[LogsPage, AsyncLogStream]:
        if follow:
            return AsyncLogStream(await self._client._open(core.logs_follow_req(self.id, offset)))
        return await self._client._send(core.logs_page(self.id, offset, limit_bytes))

    async def events(self, *, after: int = 0) -> AsyncEventStream:
        return AsyncEventStream(await self._client._open(core.events_req(self.id, after)))

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.delete()
        except NotFound:
            pass


class AsyncFiles:
    """A sandbox's file system for the async client; see :class:`sandpit.Files`."""

    def __init__(self, client: AsyncClient, sandbox_id: str) -> None:
        self._client = client
        self.sandbox_id = sandbox_id

    async def list(self, path: str = ".", *, depth: int = 1, user: Optional[str] = None) -> List[FileEntry]:
        return await self._client._send(core.files_list(self.sandbox_id, path, depth, user))

    async def stat(self, path: str, *, user: Optional[str] = None) -> FileEntry:
        return await self._client._send(core.files_stat(self.sandbox_id, path, user))

    async def exists(self, path: str, *, user: Optional[str] = None) -> bool:
        try:
            await self.stat(path, user=user)
            return True
        except NotFound:
            return False

    async def read(self, path: str, *, user: Optional[str] = None) -> bytes:
        parts = [c async for c in await self.iter_read(path, user=user)]
        return b"".join(parts)

    async def read_text(self, path: str, *, encoding: str = "utf-8", user: Optional[str] = None) -> str:
        return (await self.read(path, user=user)).decode(encoding)

    async def iter_read(
        self, path: str, *, chunk_size: int = _CHUNK, user: Optional[str] = None
    ) -> AsyncIterator[bytes]:
        """``async for chunk in await files.iter_read(path)``: the request is made by the await."""
        response = await self._client._open(core.files_read_req(self.sandbox_id, path, user))
        return _aiter_response(response, chunk_size, path)

    async def download(
        self, path: str, dest: Union[PathLike, IO[bytes]], *, user: Optional[str] = None
    ) -> int:
        n = 0
        chunks = await self.iter_read(path, user=user)
        if isinstance(dest, (str, os.PathLike)):
            with open(dest, "wb") as f:
                async for c in chunks:
                    n += f.write(c)
        else:
            async for c in chunks:
                n += dest.write(c)
        return n

    async def write(
        self,
        path: str,
        data: AsyncWriteData,
        *,
        mode: Union[None, int, str] = None,
        append: bool = False,
        user: Optional[str] = None,
    ) -> FileEntry:
        content: Any
        if isinstance(data, (bytes, bytearray, memoryview)):
            content = bytes(data)
        elif isinstance(data, str):
            content = data
        elif hasattr(data, "__aiter__"):
            content = data
        else:
            content = _async_chunks(data)
        call = core.files_write(self.sandbox_id, path, content, mode=mode, append=append, user=user)
        return await self._client._send(call)

    async def upload(
        self, local_path: PathLike, path: str, *, mode: Union[None, int, str] = None, user: Optional[str] = None
    ) -> FileEntry:
        with open(local_path, "rb") as f:
            return await self.write(path, f, mode=mode, user=user)

    async def mkdir(self, path: str) -> FileEntry:
        return await self._client._send(core.files_mkdir(self.sandbox_id, path))

    async def move(self, src: str, dst: str) -> FileEntry:
        return await self._client._send(core.files_move(self.sandbox_id, src, dst))

    async def remove(self, path: str, *, recursive: bool = False, user: Optional[str] = None) -> None:
        await self._client._send(core.files_remove(self.sandbox_id, path, recursive, user))


async def _async_chunks(data: Union[IO[bytes], Iterable[bytes]]) -> AsyncIterator[bytes]:
    """A file object or a sync iterable as the async byte stream httpx's async client needs."""
    read = getattr(data, "read", None)
    if read is not None:
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                return
            yield chunk
    else:
        for chunk in data:
            yield bytes(chunk)


async def _aiter_response(response: httpx.Response, chunk_size: int, what: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes(chunk_size):
            yield chunk
    except httpx.HTTPError as e:
        raise StreamError(None, "stream_error", f"reading {what}: {type(e).__name__}: {e}") from e
    finally:
        await response.aclose()
