"""Streams (exec output, followed logs, sandbox events) over an open HTTP answer, sync and async.

The decoding is in :mod:`sandpit._core` (``ExecState``, ``LogFollowState``, ``EventsState``);
these classes only pull bytes from the connection, as they arrive, and hand them over.
"""

from __future__ import annotations

from collections import deque
from typing import Any, AsyncIterator, Deque, Generic, Iterator, List, Optional, TypeVar

import httpx

from ._core import EventsState, ExecState, LogFollowState
from .errors import SandpitError, StreamError, TransportTimeout
from .types import ExecResult, LogEntry, OutputChunk, SandboxEvent

__all__ = [
    "ExecStream",
    "AsyncExecStream",
    "LogStream",
    "AsyncLogStream",
    "EventStream",
    "AsyncEventStream",
]

T = TypeVar("T")


def _wrap(e: httpx.HTTPError, what: str) -> SandpitError:
    if isinstance(e, httpx.TimeoutException):
        return TransportTimeout(f"{what}: timed out ({type(e).__name__})")
    return StreamError(None, "stream_error", f"{what}: the connection broke: {type(e).__name__}: {e}")


class _Decoder(Generic[T]):
    done: bool

    def feed(self, chunk: bytes) -> List[T]:  # pragma: no cover - protocol
        raise NotImplementedError

    def finish(self) -> List[T]:  # pragma: no cover - protocol
        raise NotImplementedError


class _SyncStream(Generic[T]):
    """Items decoded from a streamed answer, pulled as they arrive; closes the answer when done
    (or when closed early: for a streamed exec, that ends the command; for an attached process,
    it does not)."""

    _what = "stream"

    def __init__(self, response: httpx.Response, decoder: Any) -> None:
        self._resp = response
        self._dec = decoder
        self._bytes = response.iter_bytes()
        self._pending: Deque[T] = deque()
        self._eof = False

    def _pull(self) -> bool:
        """Reads what the connection has next; ``False`` once nothing more will come."""
        if self._eof or self._dec.done:
            return False
        try:
            chunk = next(self._bytes)
        except StopIteration:
            self._eof = True
            try:
                self._pending.extend(self._dec.finish())
            finally:
                self.close()
            return False
        except httpx.HTTPError as e:
            self.close()
            raise _wrap(e, self._what) from e
        except BaseException:
            self.close()
            raise
        try:
            self._pending.extend(self._dec.feed(chunk))
        except BaseException:
            self.close()
            raise
        if self._dec.done:
            self.close()
        return True

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while not self._pending:
            if not self._pull() and not self._pending:
                self.close()
                raise StopIteration
        return self._pending.popleft()

    def close(self) -> None:
        """Closes the connection (what was not read is lost)."""
        self._resp.close()

    def __enter__(self) -> "_SyncStream[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _AsyncStream(Generic[T]):
    """The async twin of :class:`_SyncStream`."""

    _what = "stream"

    def __init__(self, response: httpx.Response, decoder: Any) -> None:
        self._resp = response
        self._dec = decoder
        self._bytes = response.aiter_bytes()
        self._pending: Deque[T] = deque()
        self._eof = False

    async def _pull(self) -> bool:
        if self._eof or self._dec.done:
            return False
        try:
            chunk = await self._bytes.__anext__()
        except StopAsyncIteration:
            self._eof = True
            try:
                self._pending.extend(self._dec.finish())
            finally:
                await self.aclose()
            return False
        except httpx.HTTPError as e:
            await self.aclose()
            raise _wrap(e, self._what) from e
        except BaseException:
            await self.aclose()
            raise
        try:
            self._pending.extend(self._dec.feed(chunk))
        except BaseException:
            await self.aclose()
            raise
        if self._dec.done:
            await self.aclose()
        return True

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        while not self._pending:
            if not await self._pull() and not self._pending:
                await self.aclose()
                raise StopAsyncIteration
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Closes the connection (what was not read is lost)."""
        await self._resp.aclose()

    async def __aenter__(self) -> "_AsyncStream[T]":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------------------------
# Exec.


class _ExecProps:
    _dec: ExecState

    @property
    def pid(self) -> Optional[int]:
        """The command's process id inside the sandbox."""
        return self._dec.pid

    @property
    def done(self) -> bool:
        """Whether the command has ended (its exit was read)."""
        return self._dec.done

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code, once the command exited (``None`` before, or when a signal ended it)."""
        return self._dec.exit_code

    @property
    def signal(self) -> Optional[int]:
        return self._dec.signal

    @property
    def timed_out(self) -> bool:
        return self._dec.timed_out


class ExecStream(_ExecProps, _SyncStream[OutputChunk]):
    """A running command's output, chunk by chunk as it is produced (from
    :meth:`Sandbox.exec_stream <sandpit.Sandbox.exec_stream>` or
    :meth:`Sandbox.attach <sandpit.Sandbox.attach>`).

    Iterate it for :class:`~sandpit.OutputChunk` objects (``stream`` is ``"stdout"`` or
    ``"stderr"``); once it is exhausted ``exit_code`` (or ``signal``) is set. :meth:`wait` reads
    the rest and returns an :class:`~sandpit.ExecResult` with all the output (unless the stream
    was opened with ``keep_output=False``). Closing the stream of an ``exec_stream`` early ends
    the command at once; closing one from ``attach`` leaves the process running.
    """

    _what = "exec stream"

    def __init__(self, response: httpx.Response, keep_output: bool = True) -> None:
        super().__init__(response, ExecState(keep_output))
        while self._dec.pid is None and self._pull():
            pass

    def wait(self) -> ExecResult:
        """Reads until the command exits and returns its result."""
        for _ in self:
            pass
        return self._dec.result()

    def __enter__(self) -> "ExecStream":
        return self


class AsyncExecStream(_ExecProps, _AsyncStream[OutputChunk]):
    """The async :class:`ExecStream`: ``async for chunk in stream``, ``await stream.wait()``."""

    _what = "exec stream"

    def __init__(self, response: httpx.Response, keep_output: bool = True) -> None:
        super().__init__(response, ExecState(keep_output))

    async def _start(self) -> "AsyncExecStream":
        while self._dec.pid is None and await self._pull():
            pass
        return self

    async def wait(self) -> ExecResult:
        """Reads until the command exits and returns its result."""
        async for _ in self:
            pass
        return self._dec.result()

    async def __aenter__(self) -> "AsyncExecStream":
        return self


# ---------------------------------------------------------------------------------------------
# Logs and events.


class _LogProps:
    _dec: LogFollowState

    @property
    def end_state(self) -> Optional[str]:
        """The sandbox's final state, once the log ended with it."""
        return self._dec.end_state

    @property
    def offset(self) -> Optional[int]:
        """The offset to resume from (``logs(follow=True, offset=...)``) after what was read."""
        return self._dec.offset


class LogStream(_LogProps, _SyncStream[LogEntry]):
    """A followed log: :class:`~sandpit.LogEntry` objects as they are written, from the offset
    asked for; it ends when the sandbox ends (``end_state`` then says how)."""

    _what = "log stream"

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response, LogFollowState())

    def __enter__(self) -> "LogStream":
        return self


class AsyncLogStream(_LogProps, _AsyncStream[LogEntry]):
    """The async :class:`LogStream`."""

    _what = "log stream"

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response, LogFollowState())

    async def __aenter__(self) -> "AsyncLogStream":
        return self


class EventStream(_SyncStream[SandboxEvent]):
    """A sandbox's events: its history, then live ones; it ends after a final state."""

    _what = "event stream"

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response, EventsState())

    def __enter__(self) -> "EventStream":
        return self


class AsyncEventStream(_AsyncStream[SandboxEvent]):
    """The async :class:`EventStream`."""

    _what = "event stream"

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response, EventsState())

    async def __aenter__(self) -> "AsyncEventStream":
        return self
