"""The API's objects as typed, read-only-by-convention dataclasses.

Every view is built with ``from_dict`` from the JSON the server sends; keys the SDK does not know
(a newer server) are ignored but kept in ``raw``. Times are timezone-aware :class:`datetime`
objects; money amounts are :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Generic, List, Mapping, Optional, TypeVar

__all__ = [
    "SandboxState",
    "FINAL_STATES",
    "GpuRequest",
    "SandboxData",
    "Page",
    "ExecResult",
    "OutputChunk",
    "ProcessInfo",
    "FileEntry",
    "LogEntry",
    "LogsPage",
    "SandboxEvent",
    "GpuType",
    "CuratedImage",
    "LocalImage",
    "Images",
    "Estimate",
    "User",
    "Membership",
    "ApiKey",
    "Me",
    "Wallet",
    "SandboxUsage",
    "Usage",
    "Health",
]

T = TypeVar("T")

SandboxState = str
"""One of ``provisioning``, ``running``, ``paused``, ``terminated``, ``failed``."""

FINAL_STATES = frozenset({"terminated", "failed"})
"""States a sandbox never leaves."""


# ---------------------------------------------------------------------------------------------
# Decoding helpers (lenient about unknown keys, strict about the types of known ones).

_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)


def parse_datetime(value: str) -> datetime:
    """Parses an RFC 3339 time as the server writes it (nanoseconds and ``Z`` included)."""
    m = _DT.match(value.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micros = int((m.group(7) or "0")[:6].ljust(6, "0"))
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(-offset if m.group(9) == "-" else offset)
    else:
        tz = timezone.utc
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)


def _dt(d: Mapping[str, Any], key: str) -> datetime:
    v = d.get(key)
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected a time, got {v!r}")
    return parse_datetime(v)


def _opt_dt(d: Mapping[str, Any], key: str) -> Optional[datetime]:
    v = d.get(key)
    return parse_datetime(v) if isinstance(v, str) else None


def _str(d: Mapping[str, Any], key: str, default: str = "") -> str:
    v = d.get(key, default)
    return v if isinstance(v, str) else default if v is None else str(v)


def _opt_str(d: Mapping[str, Any], key: str) -> Optional[str]:
    v = d.get(key)
    return None if v is None else str(v)


def _int(d: Mapping[str, Any], key: str, default: int = 0) -> int:
    v = d.get(key, default)
    return int(v) if v is not None else default


def _opt_int(d: Mapping[str, Any], key: str) -> Optional[int]:
    v = d.get(key)
    return None if v is None else int(v)


def _bool(d: Mapping[str, Any], key: str, default: bool = False) -> bool:
    v = d.get(key, default)
    return bool(v) if v is not None else default


def _money(d: Mapping[str, Any], key: str) -> Decimal:
    v = d.get(key)
    try:
        return Decimal(str(v)) if v is not None else Decimal(0)
    except InvalidOperation as e:
        raise ValueError(f"{key}: not a decimal amount: {v!r}") from e


def _str_map(d: Mapping[str, Any], key: str) -> Dict[str, str]:
    v = d.get(key) or {}
    return {str(k): str(x) for k, x in v.items()} if isinstance(v, Mapping) else {}


def _money_map(d: Mapping[str, Any], key: str) -> Dict[str, Decimal]:
    v = d.get(key) or {}
    return {str(k): Decimal(str(x)) for k, x in v.items()} if isinstance(v, Mapping) else {}


def _list(d: Mapping[str, Any], key: str) -> List[Any]:
    v = d.get(key)
    return list(v) if isinstance(v, list) else []


def _obj(v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a JSON object, got {type(v).__name__}")
    return v


# ---------------------------------------------------------------------------------------------
# Sandboxes.


@dataclass
class GpuRequest:
    """A GPU request: ``count`` GPUs of ``type``, each a ``fraction`` percent share
    (25, 50, 75 or 100)."""

    type: str
    count: int = 1
    fraction: int = 100

    @classmethod
    def parse(cls, spec: str) -> "GpuRequest":
        """Parses the CLI's syntax ``TYPE[:COUNT][@FRACTION[%]]``: ``"H100"``, ``"A100:2"``,
        ``"H100@50%"``. Values are checked by the server."""
        rest, fraction = spec.strip(), 100
        if "@" in rest:
            rest, f = rest.split("@", 1)
            f = f[:-1] if f.endswith("%") else f
            if not f.isdigit():
                raise ValueError(f"GPU fraction {f!r} must be 25, 50, 75 or 100 (percent)")
            fraction = int(f)
        count = 1
        if ":" in rest:
            rest, c = rest.split(":", 1)
            if not c.isdigit():
                raise ValueError(f"GPU count {c!r} must be a number from 1 to 8")
            count = int(c)
        if not rest or any(ch.isspace() for ch in rest):
            raise ValueError(
                f"{spec!r} is not a GPU request: use TYPE[:COUNT][@FRACTION%], e.g. H100, A100:2, H100@50%"
            )
        return cls(type=rest, count=count, fraction=fraction)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GpuRequest":
        return cls(type=_str(d, "type"), count=_int(d, "count", 1), fraction=_int(d, "fraction", 100))

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.type, "count": self.count, "fraction": self.fraction}

    def __str__(self) -> str:
        s = self.type
        if self.count != 1:
            s += f":{self.count}"
        if self.fraction != 100:
            s += f"@{self.fraction}%"
        return s


@dataclass
class SandboxData:
    """A sandbox as the API shows it (``SandboxView``)."""

    id: str
    project: str
    state: SandboxState
    image: str
    cpu: str
    memory: str
    timeout_s: int
    keep_running: bool
    created_at: datetime
    metadata: Dict[str, str] = field(default_factory=dict)
    name: Optional[str] = None
    state_reason: Optional[str] = None
    exit_code: Optional[int] = None
    gpu: Optional[GpuRequest] = None
    started_at: Optional[datetime] = None
    ends_at: Optional[datetime] = None
    remaining_s: Optional[int] = None
    paused_at: Optional[datetime] = None
    terminated_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def fields_from_dict(v: Any) -> Dict[str, Any]:
        """The constructor's keyword arguments for a ``SandboxView`` JSON object."""
        d = _obj(v)
        gpu = d.get("gpu")
        return dict(
            id=_str(d, "id"),
            project=_str(d, "project"),
            state=_str(d, "state"),
            image=_str(d, "image"),
            cpu=_str(d, "cpu"),
            memory=_str(d, "memory"),
            timeout_s=_int(d, "timeout_s"),
            keep_running=_bool(d, "keep_running"),
            created_at=_dt(d, "created_at"),
            metadata=_str_map(d, "metadata"),
            name=_opt_str(d, "name"),
            state_reason=_opt_str(d, "state_reason"),
            exit_code=_opt_int(d, "exit_code"),
            gpu=GpuRequest.from_dict(gpu) if isinstance(gpu, Mapping) else None,
            started_at=_opt_dt(d, "started_at"),
            ends_at=_opt_dt(d, "ends_at"),
            remaining_s=_opt_int(d, "remaining_s"),
            paused_at=_opt_dt(d, "paused_at"),
            terminated_at=_opt_dt(d, "terminated_at"),
            raw=dict(d),
        )

    @classmethod
    def from_dict(cls, v: Any) -> "SandboxData":
        return cls(**cls.fields_from_dict(v))

    @property
    def is_running(self) -> bool:
        return self.state == "running"

    @property
    def is_final(self) -> bool:
        """Whether the sandbox has ended (``terminated`` or ``failed``) for good."""
        return self.state in FINAL_STATES


@dataclass
class Page(Generic[T]):
    """One page of a list; pass ``next_cursor`` back to get the next one (``None`` on the last)."""

    items: List[T]
    next_cursor: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Exec.


@dataclass
class ExecResult:
    """The result of a command (``ExecResult``). ``exit_code`` is ``None`` when a signal ended it
    (see ``signal``). (The raw answer to a background exec, which only carries the ``pid``, is
    one too; :meth:`~sandpit.Sandbox.wait_process` gives a background command's real result.)"""

    pid: int
    exit_code: Optional[int]
    stdout: str = ""
    stderr: str = ""
    signal: Optional[int] = None
    timed_out: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "ExecResult":
        d = _obj(v)
        return cls(
            pid=_int(d, "pid"),
            exit_code=_opt_int(d, "exit_code"),
            stdout=_str(d, "stdout"),
            stderr=_str(d, "stderr"),
            signal=_opt_int(d, "signal"),
            timed_out=_bool(d, "timed_out"),
            raw=dict(d),
        )

    @property
    def ok(self) -> bool:
        """The command exited with code 0."""
        return self.exit_code == 0


@dataclass
class OutputChunk:
    """A piece of a streamed command's output, as it was produced."""

    stream: str
    """``"stdout"`` or ``"stderr"``."""
    data: bytes

    @property
    def text(self) -> str:
        """``data`` decoded as UTF-8 (invalid bytes replaced; a character split across chunks
        shows as replacement characters, so join ``data`` for exact text)."""
        return self.data.decode("utf-8", "replace")

    @classmethod
    def from_event(cls, stream: str, d: Mapping[str, Any]) -> "OutputChunk":
        return cls(stream=stream, data=base64.b64decode(_str(d, "data")))


@dataclass
class ProcessInfo:
    """A process of a running sandbox (``ProcessView``): one started by exec (running, or exited
    not long ago) or the sandbox's workload (its image command, ``workload=True``)."""

    pid: int
    """Process id inside the sandbox (what :meth:`~sandpit.Sandbox.signal`,
    :meth:`~sandpit.Sandbox.attach` and the like take)."""
    argv: List[str]
    """The argument vector (a shell line shows as ``["/bin/sh", "-c", line]``)."""
    cwd: str
    uid: int
    """The numeric user id it runs as."""
    started_at: datetime
    workload: bool
    """Whether this is the sandbox's workload (its image command) rather than an exec."""
    running: bool
    exit_code: Optional[int] = None
    """The exit code, once it exited normally."""
    signal: Optional[int] = None
    """The signal that ended it, if one did (``9`` for ``KILL``)."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "ProcessInfo":
        d = _obj(v)
        return cls(
            pid=_int(d, "pid"),
            argv=[str(a) for a in _list(d, "argv")],
            cwd=_str(d, "cwd"),
            uid=_int(d, "uid"),
            started_at=_dt(d, "started_at"),
            workload=_bool(d, "workload"),
            running=_bool(d, "running"),
            exit_code=_opt_int(d, "exit_code"),
            signal=_opt_int(d, "signal"),
            raw=dict(d),
        )


# ---------------------------------------------------------------------------------------------
# Files, logs, events.


@dataclass
class FileEntry:
    """A file-system entry in a sandbox (``FileEntryView``)."""

    name: str
    path: str
    kind: str
    """``file``, ``dir``, ``symlink`` or ``other``."""
    size: int
    mode: int
    """Permission bits (``0o644``)."""
    owner: str
    group: str
    modified_at: datetime
    symlink_target: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "FileEntry":
        d = _obj(v)
        return cls(
            name=_str(d, "name"),
            path=_str(d, "path"),
            kind=_str(d, "kind"),
            size=_int(d, "size"),
            mode=_int(d, "mode"),
            owner=_str(d, "owner"),
            group=_str(d, "group"),
            modified_at=_dt(d, "modified_at"),
            symlink_target=_opt_str(d, "symlink_target"),
            raw=dict(d),
        )

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


@dataclass
class LogEntry:
    """One entry of a sandbox's workload log."""

    at: datetime
    stream: str
    """``stdout``, ``stderr`` or ``system`` (sandpit's own notes)."""
    text: str
    offset: Optional[int] = None
    """For followed logs, the byte offset to resume after this entry's batch."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any, offset: Optional[int] = None) -> "LogEntry":
        d = _obj(v)
        return cls(at=_dt(d, "at"), stream=_str(d, "stream"), text=_str(d, "text"), offset=offset, raw=dict(d))


@dataclass
class LogsPage:
    """A page of a sandbox's log; pass ``next_offset`` as ``offset`` to continue."""

    entries: List[LogEntry]
    next_offset: int
    skipped: bool = False
    """Entries before these were dropped (the log's size bound)."""

    @classmethod
    def from_dict(cls, v: Any) -> "LogsPage":
        d = _obj(v)
        return cls(
            entries=[LogEntry.from_dict(e) for e in _list(d, "entries")],
            next_offset=_int(d, "next_offset"),
            skipped=_bool(d, "skipped"),
        )

    @property
    def text(self) -> str:
        """The stdout and stderr entries joined (system notes left out)."""
        return "".join(e.text for e in self.entries if e.stream != "system")


@dataclass
class SandboxEvent:
    """A state change or a progress report of a sandbox."""

    seq: int
    at: datetime
    kind: str
    """``state`` or ``progress``."""
    state: Optional[SandboxState] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    progress: Optional[Dict[str, Any]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "SandboxEvent":
        d = _obj(v)
        progress = d.get("progress")
        return cls(
            seq=_int(d, "seq"),
            at=_dt(d, "at"),
            kind=_str(d, "kind"),
            state=_opt_str(d, "state"),
            reason=_opt_str(d, "reason"),
            message=_opt_str(d, "message"),
            progress=dict(progress) if isinstance(progress, Mapping) else None,
            raw=dict(d),
        )


# ---------------------------------------------------------------------------------------------
# Catalogs.


@dataclass
class GpuType:
    """A GPU type of the server and what is free of it."""

    type: str
    memory: str
    total: int
    free_whole: int
    free_25: int
    free_50: int
    free_75: int
    simulated: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "GpuType":
        d = _obj(v)
        return cls(
            type=_str(d, "type"),
            memory=_str(d, "memory"),
            total=_int(d, "total"),
            free_whole=_int(d, "free_whole"),
            free_25=_int(d, "free_25"),
            free_50=_int(d, "free_50"),
            free_75=_int(d, "free_75"),
            simulated=_bool(d, "simulated"),
            raw=dict(d),
        )


@dataclass
class CuratedImage:
    """An image of the curated catalog; ``name`` is what to pass as ``image``."""

    name: str
    category: str
    description: str
    reference: str
    gpu: bool
    available: bool
    size: Optional[str] = None
    build: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "CuratedImage":
        d = _obj(v)
        return cls(
            name=_str(d, "name"),
            category=_str(d, "category"),
            description=_str(d, "description"),
            reference=_str(d, "reference"),
            gpu=_bool(d, "gpu"),
            available=_bool(d, "available"),
            size=_opt_str(d, "size"),
            build=_opt_str(d, "build"),
            raw=dict(d),
        )


@dataclass
class LocalImage:
    """An image in the server's store."""

    references: List[str]
    digest: str
    size: str
    imported_at: datetime
    source: str
    private: bool = False
    last_used: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "LocalImage":
        d = _obj(v)
        return cls(
            references=[str(r) for r in _list(d, "references")],
            digest=_str(d, "digest"),
            size=_str(d, "size"),
            imported_at=_dt(d, "imported_at"),
            source=_str(d, "source"),
            private=_bool(d, "private"),
            last_used=_opt_dt(d, "last_used"),
            raw=dict(d),
        )


@dataclass
class Images:
    """The curated catalog and the server's image store."""

    curated: List[CuratedImage]
    local: List[LocalImage]

    @classmethod
    def from_dict(cls, v: Any) -> "Images":
        d = _obj(v)
        return cls(
            curated=[CuratedImage.from_dict(i) for i in _list(d, "curated")],
            local=[LocalImage.from_dict(i) for i in _list(d, "local")],
        )


# ---------------------------------------------------------------------------------------------
# Accounts and billing.


@dataclass
class Estimate:
    """What a sandbox of a size costs per hour at the server's rates."""

    currency: str
    gpu_per_hour: Decimal
    cpu_per_hour: Decimal
    memory_per_hour: Decimal
    running_per_hour: Decimal
    paused_per_hour: Decimal
    gpu_model: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "Estimate":
        d = _obj(v)
        return cls(
            currency=_str(d, "currency"),
            gpu_per_hour=_money(d, "gpu_per_hour"),
            cpu_per_hour=_money(d, "cpu_per_hour"),
            memory_per_hour=_money(d, "memory_per_hour"),
            running_per_hour=_money(d, "running_per_hour"),
            paused_per_hour=_money(d, "paused_per_hour"),
            gpu_model=_opt_str(d, "gpu_model"),
            raw=dict(d),
        )


@dataclass
class User:
    id: int
    name: str
    role: str
    """``admin`` or ``member``."""
    kyc: str
    """``unverified``, ``pending``, ``verified`` or ``rejected``."""
    created_at: datetime
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "User":
        d = _obj(v)
        return cls(
            id=_int(d, "id"),
            name=_str(d, "name"),
            role=_str(d, "role"),
            kyc=_str(d, "kyc"),
            created_at=_dt(d, "created_at"),
            raw=dict(d),
        )


@dataclass
class Membership:
    project: str
    role: str

    @classmethod
    def from_dict(cls, v: Any) -> "Membership":
        d = _obj(v)
        return cls(project=_str(d, "project"), role=_str(d, "role"))


@dataclass
class ApiKey:
    """An API key as listed (never the key itself)."""

    id: int
    name: str
    prefix: str
    user: str
    created_at: datetime
    project: Optional[str] = None
    revoked_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "ApiKey":
        d = _obj(v)
        return cls(
            id=_int(d, "id"),
            name=_str(d, "name"),
            prefix=_str(d, "prefix"),
            user=_str(d, "user"),
            created_at=_dt(d, "created_at"),
            project=_opt_str(d, "project"),
            revoked_at=_opt_dt(d, "revoked_at"),
            raw=dict(d),
        )


@dataclass
class Me:
    """Who the API key belongs to."""

    user: User
    projects: List[Membership]
    key: ApiKey

    @classmethod
    def from_dict(cls, v: Any) -> "Me":
        d = _obj(v)
        return cls(
            user=User.from_dict(d.get("user")),
            projects=[Membership.from_dict(p) for p in _list(d, "projects")],
            key=ApiKey.from_dict(d.get("key")),
        )


@dataclass
class Wallet:
    """A project's wallet."""

    project: str
    currency: str
    balance: Decimal
    balance_micros: int
    low_threshold: Decimal
    low: bool
    burn_per_hour: Decimal
    updated_at: datetime
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "Wallet":
        d = _obj(v)
        return cls(
            project=_str(d, "project"),
            currency=_str(d, "currency"),
            balance=_money(d, "balance"),
            balance_micros=_int(d, "balance_micros"),
            low_threshold=_money(d, "low_threshold"),
            low=_bool(d, "low"),
            burn_per_hour=_money(d, "burn_per_hour"),
            updated_at=_dt(d, "updated_at"),
            raw=dict(d),
        )


@dataclass
class SandboxUsage:
    sandbox: str
    project: str
    amount: Decimal
    name: Optional[str] = None

    @classmethod
    def from_dict(cls, v: Any) -> "SandboxUsage":
        d = _obj(v)
        return cls(
            sandbox=_str(d, "sandbox"), project=_str(d, "project"), amount=_money(d, "amount"), name=_opt_str(d, "name")
        )


@dataclass
class Usage:
    """Spending in ``[start, end)`` by resource, sandbox, project and UTC day; each grouping adds
    up to ``total``."""

    currency: str
    start: datetime
    end: datetime
    total: Decimal
    by_resource: Dict[str, Decimal]
    by_sandbox: List[SandboxUsage]
    by_project: Dict[str, Decimal]
    by_day: Dict[str, Decimal]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, v: Any) -> "Usage":
        d = _obj(v)
        return cls(
            currency=_str(d, "currency"),
            start=_dt(d, "from"),
            end=_dt(d, "to"),
            total=_money(d, "total"),
            by_resource=_money_map(d, "by_resource"),
            by_sandbox=[SandboxUsage.from_dict(s) for s in _list(d, "by_sandbox")],
            by_project=_money_map(d, "by_project"),
            by_day=_money_map(d, "by_day"),
            raw=dict(d),
        )


@dataclass
class Health:
    status: str
    version: str

    @classmethod
    def from_dict(cls, v: Any) -> "Health":
        d = _obj(v)
        return cls(status=_str(d, "status"), version=_str(d, "version"))
