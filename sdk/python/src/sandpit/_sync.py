"""The synchronous client: :class:`Client`, :class:`Sandbox` and :class:`Files`."""

from __future__ import annotations

import os
import time
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
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
from ._streams import EventStream, ExecStream, LogStream
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

__all__ = ["Client", "Sandbox", "Files"]

T = TypeVar("T")
PathLike = Union[str, "os.PathLike[str]"]
#: What a file write accepts: bytes, text (UTF-8), a binary file object or an iterable of bytes
#: (both streamed).
WriteData = Union[bytes, bytearray, memoryview, str, IO[bytes], Iterable[bytes]]

_CHUNK = 1 << 20


class Client(_ClientConfig):
    """A synchronous client of a sandpit server.

    ``url`` and ``api_key`` default to ``$SANDPIT_URL`` and ``$SANDPIT_API_KEY``, else to what
    ``sandpit serve`` wrote in ``~/.config/sandpit/credentials.json``; the URL defaults to
    ``http://127.0.0.1:7700``. ``timeout`` bounds ordinary requests (seconds); waiting for a
    sandbox to start, commands and streams have no read timeout.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: Union[None, float, httpx.Timeout] = DEFAULT_TIMEOUT,
        headers: Optional[Mapping[str, str]] = None,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        self._configure(url, api_key, headers)
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(timeout=self._timeout(timeout))

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, call: "core.Call[T]") -> T:
        request = core.build_request(self._http, self.url, self._headers, call.req)
        try:
            response = self._http.send(request)
        except httpx.HTTPError as e:
            raise core.transport_error(e, call.req) from e
        return core.decode(call, response)

    def _open(self, req: Req) -> httpx.Response:
        """Sends a request whose answer is read as a stream; raises the API's error if any."""
        request = core.build_request(self._http, self.url, self._headers, req)
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as e:
            raise core.transport_error(e, req) from e
        if response.status_code >= 400:
            try:
                content = response.read()
            except httpx.HTTPError:
                content = b""
            finally:
                response.close()
            raise core.error_for(response.status_code, content)
        return response

    def _sandbox(self, fields: Dict[str, Any]) -> "Sandbox":
        sb = Sandbox(**fields)
        sb._client = self
        return sb

    def close(self) -> None:
        """Closes the connections (only those of an HTTP client this client made)."""
        if self._own_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sandboxes --------------------------------------------------------------------------

    def create(
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
    ) -> "Sandbox":
        """Creates a sandbox.

        Args:
            image: a curated name (``"python"``), a reference (``"docker.io/library/python:3.12"``)
                or ``{"reference": ..., "username": ..., "password": ...}``; the server's
                default image when ``None``.
            cpu: ``"1"``, ``"0.5"``, ``"500m"`` (or a number).
            memory: ``"2Gi"``, ``"512Mi"`` (or a number of bytes).
            gpu: ``"H100"``, ``"A100:2"``, ``"H100@50%"``, or a :class:`GpuRequest`.
            timeout_s: running time before it ends itself (default 3600 s).
            env: environment variables.
            command: replaces the image's workload: an argument vector, or a shell line.
            keep_running: keep the sandbox up after its workload exits.
            metadata: labels to find it by (:meth:`list` ``metadata=``).
            name: unique among the project's sandboxes that have not ended.
            project: the project (default: the key's, or the user's default project).
            wait: answer once it is running (or failed) rather than at once, ``provisioning``.
        """
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
        return self._sandbox(self._send(call))

    def get(self, sandbox_id: str) -> "Sandbox":
        """One sandbox, by id or name (a name finds only a sandbox that has not ended)."""
        return self._sandbox(self._send(core.get_sandbox(sandbox_id)))

    def list(
        self,
        *,
        project: Optional[str] = None,
        state: Union[None, str, Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        page_size: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> Iterator["Sandbox"]:
        """Sandboxes, newest first, fetched a page at a time as the iterator advances.

        Args:
            project: only this project.
            state: only these states (``"running"`` or ``["running", "paused"]``).
            metadata: only sandboxes with all these labels.
            page_size: sandboxes per request (1 to 1000; the server's default is 100).
            limit: stop after this many.
        """
        filters = core.list_filters(project, state, metadata)
        cursor: Optional[str] = None
        seen = 0
        while True:
            page = self._send(core.list_sandboxes(filters, page_size, cursor))
            for fields in page.items:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield self._sandbox(fields)
            cursor = page.next_cursor
            if not cursor or not page.items:
                return

    def list_page(
        self,
        *,
        project: Optional[str] = None,
        state: Union[None, str, Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> "Page[Sandbox]":
        """One page of :meth:`list`; pass its ``next_cursor`` as ``cursor`` for the next."""
        filters = core.list_filters(project, state, metadata)
        page = self._send(core.list_sandboxes(filters, limit, cursor))
        return Page([self._sandbox(f) for f in page.items], page.next_cursor)

    # -- catalogs, accounts, billing --------------------------------------------------------

    def health(self) -> Health:
        """``GET /healthz`` (no key needed)."""
        return self._send(core.health())

    def gpus(self) -> List[GpuType]:
        """The server's GPU types with what is free of each."""
        return self._send(core.gpus())

    def images(self) -> Images:
        """The curated image catalog and the server's image store."""
        return self._send(core.images())

    def estimate(
        self,
        *,
        cpu: Optional[Union[str, int, float]] = None,
        memory: Optional[Union[str, int]] = None,
        gpu: Optional[GpuSpec] = None,
    ) -> Estimate:
        """What a sandbox of this size costs per hour, running and paused."""
        return self._send(core.estimate(cpu, memory, gpu))

    def me(self) -> Me:
        """Who the API key belongs to: the user, their projects and the key."""
        return self._send(core.me())

    def wallet(self, project: str) -> Wallet:
        """A project's wallet: balance, low-balance threshold, burn rate."""
        return self._send(core.wallet(project))

    def usage(
        self,
        start: Optional[TimeBound] = None,
        end: Optional[TimeBound] = None,
        *,
        project: Optional[str] = None,
    ) -> Usage:
        """Spending in ``[start, end)`` (default: the last 30 days) by resource, sandbox,
        project and day. Bounds are dates, aware datetimes or RFC 3339 strings."""
        return self._send(core.usage(start, end, project))

    def usage_csv(
        self,
        start: Optional[TimeBound] = None,
        end: Optional[TimeBound] = None,
        *,
        project: Optional[str] = None,
    ) -> str:
        """Every charge line in ``[start, end)`` as CSV."""
        return self._send(core.usage_csv(start, end, project))


class Sandbox(_SandboxBase):
    """A sandbox: its data (``id``, ``state``, ``name``, ``metadata``, ...) and what can be done
    with it. Calls that answer with the sandbox update these fields in place.

    As a context manager it deletes the sandbox on exit.
    """

    _client: Client

    @property
    def files(self) -> "Files":
        """The sandbox's file system."""
        return Files(self._client, self.id)

    def refresh(self) -> "Sandbox":
        """Reads the sandbox's current state."""
        self._update(self._client._send(core.get_sandbox(self.id)))
        return self

    def pause(self) -> "Sandbox":
        """Pauses it: its processes end, CPU, memory and GPU are released, its disk is kept."""
        self._update(self._client._send(core.pause_sandbox(self.id)))
        return self

    def resume(self) -> "Sandbox":
        """Resumes it over the same disk (its entrypoint runs again)."""
        self._update(self._client._send(core.resume_sandbox(self.id)))
        return self

    def set_timeout(self, timeout_s: Seconds) -> "Sandbox":
        """Ends it ``timeout_s`` seconds of running time from now."""
        self._update(self._client._send(core.set_timeout(self.id, timeout_s)))
        return self

    def delete(self) -> None:
        """Deletes it (succeeds for a sandbox that already ended) and refreshes its fields."""
        self._client._send(core.delete_sandbox(self.id))
        self.refresh()

    def wait(
        self,
        until: Union[str, Sequence[str]] = "running",
        *,
        timeout: Optional[float] = None,
        interval: float = 0.2,
    ) -> "Sandbox":
        """Polls until the sandbox is in one of ``until`` or has ended; raises
        :class:`TimeoutError` after ``timeout`` seconds."""
        wanted = {until} if isinstance(until, str) else set(until)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            if self.state in wanted or self.state in FINAL_STATES:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"sandbox {self.id} is still {self.state} after {timeout} s")
            time.sleep(interval)

    # -- exec -------------------------------------------------------------------------------

    def exec(
        self,
        command: CommandSpec,
        *,
        env: Optional[Mapping[str, Any]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[None, str, bytes] = None,
        timeout_s: Optional[Seconds] = None,
        on_stdout: Optional[Callable[[OutputChunk], None]] = None,
        on_stderr: Optional[Callable[[OutputChunk], None]] = None,
    ) -> ExecResult:
        """Runs a command to completion and returns its exit code and output.

        ``command`` is a shell line (run with ``/bin/sh -c``) or an argument vector. With
        ``on_stdout``/``on_stderr`` the output is streamed to them as it is produced (and is
        also in the result). A non-zero exit is not an error: check ``result.exit_code``.
        """
        body = core.exec_body(command, env=env, cwd=cwd, user=user, stdin=stdin, timeout_s=timeout_s)
        if on_stdout is None and on_stderr is None:
            return self._client._send(core.exec_call(self.id, body))
        with ExecStream(self._client._open(core.exec_stream_req(self.id, body))) as stream:
            for chunk in stream:
                cb = on_stdout if chunk.stream == "stdout" else on_stderr
                if cb is not None:
                    cb(chunk)
            return stream.wait()

    def exec_stream(
        self,
        command: CommandSpec,
        *,
        env: Optional[Mapping[str, Any]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[None, str, bytes] = None,
        timeout_s: Optional[Seconds] = None,
        keep_output: bool = True,
    ) -> ExecStream:
        """Starts a command and returns its output as a stream of chunks, each as soon as the
        command writes it::

            with sb.exec_stream("for i in 1 2 3; do echo $i; sleep 1; done") as s:
                for chunk in s:
                    print(chunk.stream, chunk.text, end="")
            print(s.exit_code)

        Closing the stream (or leaving the ``with`` block) before the command exits ends the
        command at once, with its process group. For a command that should outlive the
        stream, use :meth:`exec_background` and :meth:`attach`.
        """
        body = core.exec_body(command, env=env, cwd=cwd, user=user, stdin=stdin, timeout_s=timeout_s)
        return ExecStream(self._client._open(core.exec_stream_req(self.id, body)), keep_output)

    def exec_background(
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
        """Starts a command that keeps running after this call returns; returns its pid.

        The server keeps the command's output: follow it with :meth:`attach` (a stream, from
        what is still buffered since the start) or wait for the result with
        :meth:`wait_process`; :meth:`processes` lists it and :meth:`signal` stops it.

        ``stdin`` is written to its standard input, which is then closed, unless
        ``keep_stdin_open``: then it stays open for :meth:`send_stdin` (close it with
        :meth:`close_stdin` or ``send_stdin(..., close=True)``)::

            pid = sb.exec_background("cat", keep_stdin_open=True)
            sb.send_stdin(pid, "hello\n", close=True)
            print(sb.wait_process(pid).stdout)    # hello
        """
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
        return self._client._send(core.exec_call(self.id, body)).pid

    # -- processes --------------------------------------------------------------------------

    def processes(self) -> List[ProcessInfo]:
        """The sandbox's processes, oldest first: its workload and those exec started,
        running or exited not long ago (``running``, ``exit_code``, ``signal``)."""
        return self._client._send(core.list_processes(self.id))

    def signal(self, pid: int, signal: SignalSpec = "TERM") -> None:
        """Sends a signal to a process and its process group: a name (``"TERM"``, ``"KILL"``,
        ``"INT"``, ``"HUP"``, ``"QUIT"``, ``"USR1"``, ``"USR2"``, ``"STOP"``, ``"CONT"``) or a
        number. An unknown name raises :class:`~sandpit.InvalidRequest` (``field`` ``"signal"``),
        an unknown pid :class:`~sandpit.NotFound`."""
        self._client._send(core.signal_process(self.id, pid, signal))

    def send_stdin(self, pid: int, data: Union[str, bytes], *, close: bool = False) -> None:
        """Writes to the standard input of a process started with
        ``exec_background(..., keep_stdin_open=True)``; text is sent as UTF-8, bytes exactly.
        ``close=True`` closes its standard input afterwards (the process sees end of file).
        A process whose standard input is not open raises :class:`~sandpit.InvalidRequest`."""
        self._client._send(core.process_stdin(self.id, pid, data, close))

    def close_stdin(self, pid: int) -> None:
        """Closes a process's standard input (see :meth:`send_stdin`)."""
        self._client._send(core.process_stdin(self.id, pid, None, True))

    def attach(self, pid: int, *, keep_output: bool = True) -> ExecStream:
        """Follows a process's output as an :class:`ExecStream`, as :meth:`exec_stream` does:
        first what the server still buffers of it since it started, then what it writes, until
        it exits (``exit_code`` then set; :meth:`ExecStream.wait` gives the result)::

            pid = sb.exec_background("for i in 1 2 3; do echo $i; sleep 1; done")
            with sb.attach(pid) as stream:
                for chunk in stream:
                    print(chunk.text, end="")
            print(stream.exit_code)

        Unlike an :meth:`exec_stream`, closing this stream leaves the process running; it can
        be attached to again, also for a while after it exited. An unknown pid raises
        :class:`~sandpit.NotFound`. (The workload's output goes to :meth:`logs`, not here.)
        """
        return ExecStream(self._client._open(core.process_output_req(self.id, pid)), keep_output)

    def wait_process(self, pid: int) -> ExecResult:
        """Waits until a process exits and returns its :class:`ExecResult`, with the output the
        server still buffers of it (for a process that already exited not long ago, at once)."""
        return self._client._send(core.process_wait(self.id, pid))

    # -- logs and events --------------------------------------------------------------------

    @overload
    def logs(self, *, follow: Literal[False] = ..., offset: int = ..., limit_bytes: Optional[int] = ...) -> LogsPage: ...

    @overload
    def logs(self, *, follow: Literal[True], offset: int = ..., limit_bytes: Optional[int] = ...) -> LogStream: ...

    def logs(
        self, *, follow: bool = False, offset: int = 0, limit_bytes: Optional[int] = None
    ) -> Union[LogsPage, LogStream]:
        """The workload's log (stdout, stderr and sandpit's notes), also after it ended.

        Without ``follow``, a :class:`LogsPage` from ``offset`` (at most about ``limit_bytes``,
        default 1 MiB; continue from its ``next_offset``). With ``follow=True``, a
        :class:`LogStream` of entries as they are written, ending when the sandbox ends.
        """
        if follow:
            return LogStream(self._client._open(core.logs_follow_req(self.id, offset)))
        return self._client._send(core.logs_page(self.id, offset, limit_bytes))

    def events(self, *, after: int = 0) -> EventStream:
        """The sandbox's state changes and progress reports (history, then live), ending after
        a final state."""
        return EventStream(self._client._open(core.events_req(self.id, after)))

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.delete()
        except NotFound:
            pass


class Files:
    """A sandbox's file system. Relative paths are relative to the user's home directory."""

    def __init__(self, client: Client, sandbox_id: str) -> None:
        self._client = client
        self.sandbox_id = sandbox_id

    def list(self, path: str = ".", *, depth: int = 1, user: Optional[str] = None) -> List[FileEntry]:
        """A directory's entries (``depth`` levels deep), the directory itself excluded."""
        return self._client._send(core.files_list(self.sandbox_id, path, depth, user))

    def stat(self, path: str, *, user: Optional[str] = None) -> FileEntry:
        """Describes a path (a final symbolic link is not followed)."""
        return self._client._send(core.files_stat(self.sandbox_id, path, user))

    def exists(self, path: str, *, user: Optional[str] = None) -> bool:
        try:
            self.stat(path, user=user)
            return True
        except NotFound:
            return False

    def read(self, path: str, *, user: Optional[str] = None) -> bytes:
        """A file's content."""
        return b"".join(self.iter_read(path, user=user))

    def read_text(self, path: str, *, encoding: str = "utf-8", user: Optional[str] = None) -> str:
        return self.read(path, user=user).decode(encoding)

    def iter_read(self, path: str, *, chunk_size: int = _CHUNK, user: Optional[str] = None) -> Iterator[bytes]:
        """A file's content in chunks, streamed (for big files). The request is made here."""
        response = self._client._open(core.files_read_req(self.sandbox_id, path, user))
        return _iter_response(response, chunk_size, path)

    def download(self, path: str, dest: Union[PathLike, IO[bytes]], *, user: Optional[str] = None) -> int:
        """Streams a file to a local path or a binary file object; returns the bytes written."""
        n = 0
        chunks = self.iter_read(path, user=user)
        if isinstance(dest, (str, os.PathLike)):
            with open(dest, "wb") as f:
                for c in chunks:
                    n += f.write(c)
        else:
            for c in chunks:
                n += dest.write(c)
        return n

    def write(
        self,
        path: str,
        data: WriteData,
        *,
        mode: Union[None, int, str] = None,
        append: bool = False,
        user: Optional[str] = None,
    ) -> FileEntry:
        """Writes a file, creating parent directories; replaces it atomically unless
        ``append``. ``data`` may be bytes, text (UTF-8), a binary file object or an iterable of
        byte chunks (both streamed). ``mode`` sets a new file's permission bits (``0o600``)."""
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        call = core.files_write(self.sandbox_id, path, data, mode=mode, append=append, user=user)
        return self._client._send(call)

    def upload(
        self, local_path: PathLike, path: str, *, mode: Union[None, int, str] = None, user: Optional[str] = None
    ) -> FileEntry:
        """Streams a local file into the sandbox."""
        with open(local_path, "rb") as f:
            return self.write(path, f, mode=mode, user=user)

    def mkdir(self, path: str) -> FileEntry:
        """Creates a directory with its parents."""
        return self._client._send(core.files_mkdir(self.sandbox_id, path))

    def move(self, src: str, dst: str) -> FileEntry:
        """Moves (renames) a path; returns the entry at its new path."""
        return self._client._send(core.files_move(self.sandbox_id, src, dst))

    def remove(self, path: str, *, recursive: bool = False, user: Optional[str] = None) -> None:
        """Removes a file, or a directory (one with content only with ``recursive``)."""
        self._client._send(core.files_remove(self.sandbox_id, path, recursive, user))


def _iter_response(response: httpx.Response, chunk_size: int, what: str) -> Iterator[bytes]:
    try:
        for chunk in response.iter_bytes(chunk_size):
            yield chunk
    except httpx.HTTPError as e:
        raise StreamError(None, "stream_error", f"reading {what}: {type(e).__name__}: {e}") from e
    finally:
        response.close()

