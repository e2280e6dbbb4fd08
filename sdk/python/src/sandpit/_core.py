"""What the sync and async clients share: building requests, decoding answers and streams.

Each API operation is a function returning a :class:`Call`, a description of the HTTP request
plus the function that turns the decoded answer into SDK objects. The sync and async clients
only differ in how they send a ``Call`` (and read streams), so no operation is written twice.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
)
from urllib.parse import quote

import httpx

from ._version import __version__
from .errors import SandpitError, StreamError, TransportError, TransportTimeout, error_from_body
from .types import (
    FINAL_STATES,
    Estimate,
    ExecResult,
    FileEntry,
    GpuRequest,
    GpuType,
    Health,
    Images,
    LogEntry,
    LogsPage,
    Me,
    OutputChunk,
    ProcessInfo,
    SandboxData,
    SandboxEvent,
    Usage,
    Wallet,
)

T = TypeVar("T")

#: What ``gpu=`` accepts: ``"H100"``, ``"A100:2"``, ``"H100@50%"``, a :class:`GpuRequest` or a
#: mapping with ``type``/``count``/``fraction``.
GpuSpec = Union[str, GpuRequest, Mapping[str, Any]]
#: What ``image=`` accepts: a reference or curated name, or a mapping with ``reference``,
#: ``username`` and ``password`` for a private registry.
ImageSpec = Union[str, Mapping[str, Any]]
#: A command: a shell line (run with ``/bin/sh -c``) or an argument vector.
CommandSpec = Union[str, Sequence[str]]
#: Seconds, or a :class:`~datetime.timedelta`.
Seconds = Union[int, float, timedelta]
#: A time bound for usage: a date, an aware datetime, or a string the API accepts.
TimeBound = Union[str, date, datetime]
#: A signal: a name (``"TERM"``, ``"KILL"``, ``"INT"``, ``"HUP"``, ``"QUIT"``, ``"USR1"``,
#: ``"USR2"``, ``"STOP"``, ``"CONT"``, with or without ``SIG``) or a number (``9``,
#: ``signal.SIGKILL``).
SignalSpec = Union[str, int]

USER_AGENT = f"sandpit-python/{__version__}"
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"


# ---------------------------------------------------------------------------------------------
# Requests.


@dataclass
class Req:
    """An HTTP request to the API, independent of the client that sends it."""

    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    json: Any = None
    content: Any = None
    headers: Dict[str, str] = field(default_factory=dict)
    long: bool = False
    """No read timeout: the answer may take as long as the operation does."""


@dataclass
class Call(Generic[T]):
    """A request and how to decode its answer (``parse`` gets the decoded JSON, the text for a
    non-JSON answer, or ``None`` for an empty one)."""

    req: Req
    parse: Callable[[Any], T]


def seg(s: str) -> str:
    """One URL path segment."""
    if not s:
        raise ValueError("an id or name must not be empty")
    return quote(str(s), safe="")


def sandbox_path(sandbox_id: str, rest: str = "") -> str:
    return f"/v1/sandboxes/{seg(sandbox_id)}{rest}"


def _clean(params: Mapping[str, Any]) -> Dict[str, Any]:
    """Query parameters without the unset ones; booleans as ``true``/``false``."""
    out: Dict[str, Any] = {}
    for k, v in params.items():
        if v is None or v is False:
            continue
        out[k] = "true" if v is True else v
    return out


def seconds(v: Seconds) -> int:
    if isinstance(v, timedelta):
        v = v.total_seconds()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected seconds (int) or a timedelta, got {v!r}")
    return int(v)


def quantity(v: Union[str, int, float]) -> str:
    """CPU or memory as the API wants it: a string (``"0.5"``, ``"2Gi"``); numbers are sent as
    they are written (a memory number is bytes)."""
    if isinstance(v, bool):
        raise TypeError(f"expected a quantity, got {v!r}")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def gpu_dict(gpu: GpuSpec) -> Dict[str, Any]:
    if isinstance(gpu, str):
        return GpuRequest.parse(gpu).to_dict()
    if isinstance(gpu, GpuRequest):
        return gpu.to_dict()
    return dict(gpu)


def command_fields(command: CommandSpec) -> Dict[str, Any]:
    if isinstance(command, str):
        return {"shell": command}
    argv = list(command)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("command must be a shell line or a non-empty list of strings")
    return {"command": argv}


def _str_dict(m: Optional[Mapping[str, Any]]) -> Optional[Dict[str, str]]:
    if m is None:
        return None
    return {str(k): str(v) for k, v in m.items()}


def _time_bound(v: Optional[TimeBound]) -> Optional[str]:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ValueError("give an aware datetime (with tzinfo) for usage bounds")
        return v.isoformat()
    return v.isoformat()


# ---------------------------------------------------------------------------------------------
# Operations.


def health() -> Call[Health]:
    return Call(Req("GET", "/healthz"), Health.from_dict)


def create_sandbox(
    *,
    image: Optional[ImageSpec] = None,
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
) -> Call[Dict[str, Any]]:
    body: Dict[str, Any] = {}
    if image is not None:
        body["image"] = image if isinstance(image, str) else dict(image)
    if cpu is not None:
        body["cpu"] = quantity(cpu)
    if memory is not None:
        body["memory"] = quantity(memory)
    if gpu is not None:
        body["gpu"] = gpu_dict(gpu)
    if timeout_s is not None:
        body["timeout_s"] = seconds(timeout_s)
    if env is not None:
        body["env"] = _str_dict(env)
    if command is not None:
        if isinstance(command, str):
            command = ["/bin/sh", "-c", command]
        body["command"] = list(command)
    if keep_running is not None:
        body["keep_running"] = bool(keep_running)
    if metadata is not None:
        body["metadata"] = _str_dict(metadata)
    if name is not None:
        body["name"] = name
    if project is not None:
        body["project"] = project
    req = Req("POST", "/v1/sandboxes", params=_clean({"wait": wait}), json=body, long=wait)
    return Call(req, SandboxData.fields_from_dict)


def get_sandbox(sandbox_id: str) -> Call[Dict[str, Any]]:
    return Call(Req("GET", sandbox_path(sandbox_id)), SandboxData.fields_from_dict)


def list_filters(
    project: Optional[str] = None,
    state: Union[None, str, Sequence[str]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    if state is not None and not isinstance(state, str):
        state = ",".join(state)
    meta = None
    if metadata:
        meta = ",".join(f"{k}:{v}" for k, v in metadata.items())
    return {"project": project, "state": state, "metadata": meta}


def list_sandboxes(
    filters: Mapping[str, Any], limit: Optional[int] = None, cursor: Optional[str] = None
) -> Call["ListPage"]:
    params = _clean({**filters, "limit": limit, "cursor": cursor})

    def parse(v: Any) -> ListPage:
        if not isinstance(v, Mapping):
            raise ValueError("expected a page object")
        items = v.get("items") or []
        return ListPage([SandboxData.fields_from_dict(i) for i in items], v.get("next_cursor") or None)

    return Call(Req("GET", "/v1/sandboxes", params=params), parse)


@dataclass
class ListPage:
    items: List[Dict[str, Any]]
    next_cursor: Optional[str]


def delete_sandbox(sandbox_id: str) -> Call[None]:
    return Call(Req("DELETE", sandbox_path(sandbox_id)), _none)


def pause_sandbox(sandbox_id: str) -> Call[Dict[str, Any]]:
    return Call(Req("POST", sandbox_path(sandbox_id, "/pause"), long=True), SandboxData.fields_from_dict)


def resume_sandbox(sandbox_id: str) -> Call[Dict[str, Any]]:
    return Call(Req("POST", sandbox_path(sandbox_id, "/resume"), long=True), SandboxData.fields_from_dict)


def set_timeout(sandbox_id: str, timeout_s: Seconds) -> Call[Dict[str, Any]]:
    req = Req("POST", sandbox_path(sandbox_id, "/timeout"), json={"timeout_s": seconds(timeout_s)})
    return Call(req, SandboxData.fields_from_dict)


def exec_body(
    command: CommandSpec,
    *,
    env: Optional[Mapping[str, Any]] = None,
    cwd: Optional[str] = None,
    user: Optional[str] = None,
    stdin: Union[None, str, bytes] = None,
    timeout_s: Optional[Seconds] = None,
    background: bool = False,
    keep_stdin_open: bool = False,
) -> Dict[str, Any]:
    if keep_stdin_open and not background:
        raise ValueError("keep_stdin_open applies to background commands only")
    body = command_fields(command)
    if env is not None:
        body["env"] = _str_dict(env)
    if cwd is not None:
        body["cwd"] = cwd
    if user is not None:
        body["user"] = user
    if stdin is not None:
        # The API takes stdin as text.
        body["stdin"] = stdin.decode("utf-8") if isinstance(stdin, bytes) else stdin
    if timeout_s is not None:
        body["timeout_s"] = seconds(timeout_s)
    if background:
        body["background"] = True
    if keep_stdin_open:
        body["keep_stdin_open"] = True
    return body


def exec_call(sandbox_id: str, body: Dict[str, Any]) -> Call[ExecResult]:
    return Call(Req("POST", sandbox_path(sandbox_id, "/exec"), json=body, long=True), ExecResult.from_dict)


def exec_stream_req(sandbox_id: str, body: Dict[str, Any]) -> Req:
    return Req("POST", sandbox_path(sandbox_id, "/exec"), json=body, headers={"Accept": NDJSON}, long=True)


# Processes.


def process_path(sandbox_id: str, pid: int, rest: str) -> str:
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"a pid is an int, got {pid!r}")
    if pid < 0:
        raise ValueError(f"a pid is not negative, got {pid}")
    return sandbox_path(sandbox_id, f"/processes/{pid}{rest}")


def list_processes(sandbox_id: str) -> Call[List[ProcessInfo]]:
    return Call(
        Req("GET", sandbox_path(sandbox_id, "/processes")), lambda v: [ProcessInfo.from_dict(p) for p in _array(v)]
    )


def signal_name(sig: SignalSpec) -> str:
    """A signal as the API takes it: the name as given, a number (``signal.Signals`` too) as
    its decimal string. The server checks it."""
    if isinstance(sig, bool):
        raise TypeError(f"expected a signal name or number, got {sig!r}")
    if isinstance(sig, int):
        return str(int(sig))
    if isinstance(sig, str):
        return sig
    raise TypeError(f"expected a signal name or number, got {sig!r}")


def signal_process(sandbox_id: str, pid: int, sig: SignalSpec) -> Call[None]:
    req = Req("POST", process_path(sandbox_id, pid, "/signal"), json={"signal": signal_name(sig)})
    return Call(req, _none)


def process_stdin(
    sandbox_id: str, pid: int, data: Union[None, str, bytes, bytearray, memoryview], close: bool = False
) -> Call[None]:
    """Text goes as ``data``, bytes as ``data_base64`` (so any bytes arrive exactly)."""
    body: Dict[str, Any] = {}
    if isinstance(data, str):
        body["data"] = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        body["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        raise TypeError(f"stdin data is str or bytes, got {type(data).__name__}")
    elif not close:
        raise ValueError("give data to write, or close=True")
    if close:
        body["close"] = True
    return Call(Req("POST", process_path(sandbox_id, pid, "/stdin"), json=body, long=True), _none)


def process_output_req(sandbox_id: str, pid: int) -> Req:
    return Req("GET", process_path(sandbox_id, pid, "/output"), headers={"Accept": NDJSON}, long=True)


def process_wait(sandbox_id: str, pid: int) -> Call[ExecResult]:
    req = Req("GET", process_path(sandbox_id, pid, "/output"), headers={"Accept": "application/json"}, long=True)
    return Call(req, ExecResult.from_dict)


def logs_page(sandbox_id: str, offset: int = 0, limit_bytes: Optional[int] = None) -> Call[LogsPage]:
    params = _clean({"offset": offset or None, "limit_bytes": limit_bytes})
    return Call(Req("GET", sandbox_path(sandbox_id, "/logs"), params=params), LogsPage.from_dict)


def logs_follow_req(sandbox_id: str, offset: int = 0) -> Req:
    params = _clean({"follow": True, "offset": offset or None})
    return Req("GET", sandbox_path(sandbox_id, "/logs"), params=params, headers={"Accept": EVENT_STREAM}, long=True)


def events_req(sandbox_id: str, after: int = 0) -> Req:
    params = _clean({"after": after or None})
    return Req("GET", sandbox_path(sandbox_id, "/events"), params=params, headers={"Accept": EVENT_STREAM}, long=True)


# Files.


def file_params(path: str, **extra: Any) -> Dict[str, Any]:
    return _clean({"path": path, **extra})


def files_list(sandbox_id: str, path: str, depth: int = 1, user: Optional[str] = None) -> Call[List[FileEntry]]:
    params = file_params(path, depth=depth if depth != 1 else None, user=user)
    return Call(Req("GET", sandbox_path(sandbox_id, "/files"), params=params), _entries)


def files_stat(sandbox_id: str, path: str, user: Optional[str] = None) -> Call[FileEntry]:
    params = file_params(path, user=user)
    return Call(Req("GET", sandbox_path(sandbox_id, "/files/stat"), params=params), FileEntry.from_dict)


def files_remove(sandbox_id: str, path: str, recursive: bool = False, user: Optional[str] = None) -> Call[None]:
    params = file_params(path, recursive=recursive, user=user)
    return Call(Req("DELETE", sandbox_path(sandbox_id, "/files"), params=params), _none)


def files_mkdir(sandbox_id: str, path: str) -> Call[FileEntry]:
    return Call(Req("POST", sandbox_path(sandbox_id, "/files/mkdir"), json={"path": path}), FileEntry.from_dict)


def files_move(sandbox_id: str, src: str, dst: str) -> Call[FileEntry]:
    req = Req("POST", sandbox_path(sandbox_id, "/files/move"), json={"from": src, "to": dst})
    return Call(req, FileEntry.from_dict)


def files_write(
    sandbox_id: str,
    path: str,
    content: Any,
    *,
    mode: Union[None, int, str] = None,
    append: bool = False,
    user: Optional[str] = None,
) -> Call[FileEntry]:
    if isinstance(mode, int):
        mode = format(mode, "o")
    if isinstance(content, str):
        content = content.encode("utf-8")
    params = file_params(path, mode=mode, append=append, user=user)
    req = Req(
        "PUT",
        sandbox_path(sandbox_id, "/files/content"),
        params=params,
        content=content,
        headers={"Content-Type": "application/octet-stream"},
        long=True,
    )
    return Call(req, FileEntry.from_dict)


def files_read_req(sandbox_id: str, path: str, user: Optional[str] = None) -> Req:
    params = file_params(path, user=user)
    return Req("GET", sandbox_path(sandbox_id, "/files/content"), params=params, long=True)


# Catalogs, accounts, billing.


def gpus() -> Call[List[GpuType]]:
    return Call(Req("GET", "/v1/gpus"), lambda v: [GpuType.from_dict(g) for g in _array(v)])


def images() -> Call[Images]:
    return Call(Req("GET", "/v1/images"), Images.from_dict)


def estimate(
    cpu: Optional[Union[str, int, float]] = None,
    memory: Optional[Union[str, int]] = None,
    gpu: Optional[GpuSpec] = None,
) -> Call[Estimate]:
    body: Dict[str, Any] = {}
    if cpu is not None:
        body["cpu"] = quantity(cpu)
    if memory is not None:
        body["memory"] = quantity(memory)
    if gpu is not None:
        body["gpu"] = gpu_dict(gpu)
    return Call(Req("POST", "/v1/estimate", json=body), Estimate.from_dict)


def me() -> Call[Me]:
    return Call(Req("GET", "/v1/me"), Me.from_dict)


def wallet(project: str) -> Call[Wallet]:
    return Call(Req("GET", f"/v1/projects/{seg(project)}/wallet"), Wallet.from_dict)


def usage(
    start: Optional[TimeBound] = None,
    end: Optional[TimeBound] = None,
    project: Optional[str] = None,
) -> Call[Usage]:
    params = _clean({"from": _time_bound(start), "to": _time_bound(end), "project": project})
    return Call(Req("GET", "/v1/billing/usage", params=params), Usage.from_dict)


def usage_csv(
    start: Optional[TimeBound] = None,
    end: Optional[TimeBound] = None,
    project: Optional[str] = None,
) -> Call[str]:
    params = _clean({"from": _time_bound(start), "to": _time_bound(end), "project": project, "format": "csv"})
    return Call(Req("GET", "/v1/billing/usage", params=params, headers={"Accept": "text/csv"}), str)


def _none(_: Any) -> None:
    return None


def _array(v: Any) -> List[Any]:
    if not isinstance(v, list):
        raise ValueError("expected a JSON array")
    return v


def _entries(v: Any) -> List[FileEntry]:
    return [FileEntry.from_dict(e) for e in _array(v)]


# ---------------------------------------------------------------------------------------------
# Answers.


def build_request(
    http: Union[httpx.Client, httpx.AsyncClient], base_url: str, headers: Mapping[str, str], req: Req
) -> httpx.Request:
    timeout: Any = httpx.USE_CLIENT_DEFAULT
    if req.long:
        base = http.timeout
        timeout = httpx.Timeout(connect=base.connect, read=None, write=base.write, pool=base.pool)
    return http.build_request(
        req.method,
        base_url + req.path,
        params=req.params,
        json=req.json,
        content=req.content,
        headers={**headers, **req.headers},
        timeout=timeout,
    )


def error_for(status: int, content: bytes) -> SandpitError:
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    return error_from_body(status, body, content.decode("utf-8", "replace"))


def decode(call: Call[T], response: httpx.Response) -> T:
    """Turns a read answer into the call's result, or raises the API's error."""
    if response.status_code >= 400:
        raise error_for(response.status_code, response.content)
    try:
        if not response.content:
            value: Any = None
        elif response.headers.get("content-type", "").startswith("application/json"):
            value = response.json()
        else:
            value = response.text
        return call.parse(value)
    except (ValueError, KeyError, TypeError) as e:
        raise SandpitError(
            response.status_code, "decode_error", f"unexpected answer to {call.req.method} {call.req.path}: {e}"
        ) from e


def transport_error(e: httpx.HTTPError, req: Req) -> SandpitError:
    what = f"{req.method} {req.path}"
    if isinstance(e, httpx.TimeoutException):
        return TransportTimeout(f"{what}: timed out ({type(e).__name__})")
    return TransportError(f"{what}: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------
# Streams: newline-delimited JSON and server-sent events, decoded from bytes as they arrive.


class LineSplitter:
    """Splits a byte stream into lines (``\\n`` or ``\\r\\n``), emitting each as soon as its end
    arrives. (httpx's own line iterator also splits on U+2028 and friends, which JSON text may
    contain.)"""

    MAX_LINE = 64 << 20

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> List[bytes]:
        self._buf += chunk
        lines: List[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl - 1 if nl > start and self._buf[nl - 1] == 0x0D else nl
            lines.append(bytes(self._buf[start:end]))
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > self.MAX_LINE:
            raise StreamError(None, "stream_error", f"a streamed line is longer than {self.MAX_LINE} bytes")
        return lines

    def flush(self) -> List[bytes]:
        rest, self._buf = bytes(self._buf), bytearray()
        return [rest.rstrip(b"\r")] if rest else []


@dataclass
class SSE:
    event: str
    data: str
    id: Optional[str] = None


class SSEDecoder:
    """Server-sent events from lines (the ``text/event-stream`` format)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []
        self._id: Optional[str] = None

    def feed(self, raw: bytes) -> Optional[SSE]:
        line = raw.decode("utf-8", "replace")
        if not line:
            if not self._data and not self._event:
                return None
            ev = SSE(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def _json_line(line: bytes) -> Optional[Mapping[str, Any]]:
    if not line.strip():
        return None
    try:
        v = json.loads(line)
    except ValueError as e:
        raise StreamError(None, "stream_error", f"undecodable stream line: {line[:200]!r}") from e
    if not isinstance(v, Mapping):
        raise StreamError(None, "stream_error", f"unexpected stream line: {line[:200]!r}")
    return v


class ExecState:
    """Folds a streamed exec's events: output chunks out, the end recorded."""

    def __init__(self, keep_output: bool = True) -> None:
        self.pid: Optional[int] = None
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.timed_out = False
        self.done = False
        self.keep_output = keep_output
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._lines = LineSplitter()

    def feed(self, chunk: bytes) -> List[OutputChunk]:
        out: List[OutputChunk] = []
        for line in self._lines.feed(chunk):
            c = self._line(line)
            if c is not None:
                out.append(c)
        return out

    def finish(self) -> List[OutputChunk]:
        out = [c for c in (self._line(line) for line in self._lines.flush()) if c is not None]
        if not self.done:
            raise StreamError(None, "stream_error", "the exec stream ended before the command exited")
        return out

    def _line(self, line: bytes) -> Optional[OutputChunk]:
        ev = _json_line(line)
        if ev is None or self.done:
            return None
        kind = ev.get("event")
        if kind in ("stdout", "stderr"):
            c = OutputChunk.from_event(str(kind), ev)
            if self.keep_output:
                (self.stdout if kind == "stdout" else self.stderr).extend(c.data)
            return c
        if kind == "started":
            self.pid = int(ev.get("pid") or 0)
        elif kind == "exited":
            self.exit_code = None if ev.get("exit_code") is None else int(ev["exit_code"])
            self.signal = None if ev.get("signal") is None else int(ev["signal"])
            self.timed_out = bool(ev.get("timed_out"))
            self.done = True
        elif kind == "error":
            self.done = True
            err = error_from_body(None, ev)
            if type(err) is SandpitError:
                err = StreamError(err.status, err.code, err.message, body=ev)
            raise err
        return None

    def result(self) -> ExecResult:
        return ExecResult(
            pid=self.pid or 0,
            exit_code=self.exit_code,
            stdout=self.stdout.decode("utf-8", "replace"),
            stderr=self.stderr.decode("utf-8", "replace"),
            signal=self.signal,
            timed_out=self.timed_out,
        )


class LogFollowState:
    """Folds a followed log's events: entries out; the end (the sandbox's final state) recorded."""

    def __init__(self) -> None:
        self.end_state: Optional[str] = None
        self.done = False
        self.offset: Optional[int] = None
        self._lines = LineSplitter()
        self._sse = SSEDecoder()

    def feed(self, chunk: bytes) -> List[LogEntry]:
        return self._lines_to_entries(self._lines.feed(chunk))

    def finish(self) -> List[LogEntry]:
        return self._lines_to_entries(self._lines.flush() + [b""])

    def _lines_to_entries(self, lines: Iterable[bytes]) -> List[LogEntry]:
        out: List[LogEntry] = []
        for line in lines:
            ev = self._sse.feed(line)
            if ev is None or self.done:
                continue
            if ev.event == "log":
                offset = int(ev.id) if ev.id and ev.id.isdigit() else None
                out.append(LogEntry.from_dict(_decode_data(ev), offset=offset))
                self.offset = offset if offset is not None else self.offset
            elif ev.event == "end":
                self.end_state = ev.data or None
                self.done = True
        return out


class EventsState:
    """Folds a sandbox's event stream; done after a final state."""

    def __init__(self) -> None:
        self.done = False
        self._lines = LineSplitter()
        self._sse = SSEDecoder()

    def feed(self, chunk: bytes) -> List[SandboxEvent]:
        return self._decode(self._lines.feed(chunk))

    def finish(self) -> List[SandboxEvent]:
        out = self._decode(self._lines.flush() + [b""])
        self.done = True
        return out

    def _decode(self, lines: Iterable[bytes]) -> List[SandboxEvent]:
        out: List[SandboxEvent] = []
        for line in lines:
            ev = self._sse.feed(line)
            if ev is None or self.done or ev.event not in ("state", "progress"):
                continue
            e = SandboxEvent.from_dict(_decode_data(ev))
            out.append(e)
            if e.kind == "state" and e.state in FINAL_STATES:
                self.done = True
        return out


def _decode_data(ev: SSE) -> Mapping[str, Any]:
    v = _json_line(ev.data.encode("utf-8"))
    if v is None:
        raise StreamError(None, "stream_error", f"empty {ev.event} event")
    return v
