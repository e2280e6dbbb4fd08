"""Offline tests: decoding, errors, credentials, and the clients over a mock transport."""

from __future__ import annotations

import base64
import json
import pickle
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List

import httpx
import pytest

import sandpit
from sandpit import _core as core
from sandpit._config import resolve
from sandpit.errors import error_from_body
from sandpit.types import GpuRequest, parse_datetime

KEY = "sp_unit_0000000000000000000000"

SANDBOX: Dict[str, Any] = {
    "id": "06h28debjdvvplqk00mh",
    "name": "x1",
    "project": "default",
    "state": "running",
    "state_reason": None,
    "exit_code": None,
    "image": "sandpit/busybox:latest",
    "cpu": "1",
    "memory": "1Gi",
    "gpu": {"type": "H100", "count": 1, "fraction": 50},
    "timeout_s": 3600,
    "keep_running": False,
    "created_at": "2026-11-28T22:10:35.035Z",
    "started_at": "2026-11-28T22:10:35.151Z",
    "ends_at": "2026-11-28T23:10:35.151Z",
    "remaining_s": None,
    "paused_at": None,
    "terminated_at": None,
    "metadata": {"a": "b"},
    "some_future_field": {"x": 1},
}


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> sandpit.Client:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return sandpit.Client("http://sandpit.test/", KEY, http_client=http)


# -- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,want",
    [
        ("H100", GpuRequest("H100", 1, 100)),
        ("A100-80GB:2", GpuRequest("A100-80GB", 2, 100)),
        ("H100@50%", GpuRequest("H100", 1, 50)),
        ("T4:2@25", GpuRequest("T4", 2, 25)),
    ],
)
def test_gpu_parse(spec: str, want: GpuRequest) -> None:
    assert GpuRequest.parse(spec) == want
    assert GpuRequest.parse(str(want)) == want


@pytest.mark.parametrize("spec", ["", "H100:x", "H100@half", "@50", "H 100"])
def test_gpu_parse_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        GpuRequest.parse(spec)


def test_parse_datetime() -> None:
    utc = timezone.utc
    assert parse_datetime("2026-11-28T22:10:27.689796433Z") == datetime(2026, 11, 28, 22, 10, 27, 689796, utc)
    assert parse_datetime("2026-11-28T22:10:27.48Z") == datetime(2026, 11, 28, 22, 10, 27, 480000, utc)
    assert parse_datetime("2026-11-28T22:10:27Z") == datetime(2026, 11, 28, 22, 10, 27, tzinfo=utc)
    t = parse_datetime("2026-11-28T23:10:27+01:00")
    assert t == datetime(2026, 11, 28, 22, 10, 27, tzinfo=utc) and t.utcoffset() == timedelta(hours=1)
    with pytest.raises(ValueError):
        parse_datetime("yesterday")


def test_sandbox_view_tolerates_unknown_fields() -> None:
    sb = sandpit.SandboxData.from_dict(SANDBOX)
    assert sb.gpu == GpuRequest("H100", 1, 50) and sb.metadata == {"a": "b"}
    assert sb.raw["some_future_field"] == {"x": 1}
    assert sb.ends_at is not None and sb.ends_at.tzinfo is not None
    minimal = sandpit.SandboxData.from_dict(
        {k: SANDBOX[k] for k in ("id", "project", "state", "image", "cpu", "memory", "timeout_s", "keep_running", "created_at")}
    )
    assert minimal.metadata == {} and minimal.gpu is None and minimal.name is None


def test_request_building() -> None:
    call = core.create_sandbox(
        image="python", cpu=0.5, memory=512 * 1024 * 1024, gpu="H100@50%", timeout_s=timedelta(minutes=10),
        env={"N": 1}, command="echo hi", metadata={"k": "v"}, wait=True,
    )
    assert call.req.params == {"wait": "true"} and call.req.long
    assert call.req.json == {
        "image": "python",
        "cpu": "0.5",
        "memory": str(512 * 1024 * 1024),
        "gpu": {"type": "H100", "count": 1, "fraction": 50},
        "timeout_s": 600,
        "env": {"N": "1"},
        "command": ["/bin/sh", "-c", "echo hi"],
        "metadata": {"k": "v"},
    }
    assert core.create_sandbox(wait=False).req.params == {}
    assert core.exec_body(["ls", "-l"], stdin=b"x", background=True) == {
        "command": ["ls", "-l"], "stdin": "x", "background": True,
    }
    assert core.list_filters(state=["running", "paused"], metadata={"a": "b", "c": "d"}) == {
        "project": None, "state": "running,paused", "metadata": "a:b,c:d",
    }
    assert core.files_write("s", "/a b/c", b"", mode=0o600, append=True).req.params == {
        "path": "/a b/c", "mode": "600", "append": "true",
    }
    assert core.get_sandbox("a/b").req.path == "/v1/sandboxes/a%2Fb"
    assert core.usage(datetime(2026, 1, 1, tzinfo=timezone.utc)).req.params == {"from": "2026-01-01T00:00:00+00:00"}
    with pytest.raises(ValueError):
        core.usage(datetime(2026, 1, 1))


def test_process_requests() -> None:
    import signal

    assert core.exec_body("cat", background=True, keep_stdin_open=True) == {
        "shell": "cat", "background": True, "keep_stdin_open": True,
    }
    with pytest.raises(ValueError):
        core.exec_body("cat", keep_stdin_open=True)
    assert core.list_processes("s").req.path == "/v1/sandboxes/s/processes"
    sig = core.signal_process("s", 12, "KILL").req
    assert (sig.method, sig.path, sig.json) == ("POST", "/v1/sandboxes/s/processes/12/signal", {"signal": "KILL"})
    assert core.signal_process("s", 12, 9).req.json == {"signal": "9"}
    assert core.signal_process("s", 12, signal.SIGTERM).req.json == {"signal": "15"}
    with pytest.raises(TypeError):
        core.signal_process("s", 12, True)
    with pytest.raises(TypeError):
        core.signal_process("s", "12", "TERM")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        core.signal_process("s", -1, "TERM")
    assert core.process_stdin("s", 3, "h\u00e9").req.json == {"data": "h\u00e9"}
    assert core.process_stdin("s", 3, b"\x00\xff", close=True).req.json == {"data_base64": "AP8=", "close": True}
    assert core.process_stdin("s", 3, None, close=True).req.json == {"close": True}
    with pytest.raises(ValueError):
        core.process_stdin("s", 3, None)
    out = core.process_output_req("s", 3)
    assert (out.method, out.path, out.headers["Accept"], out.long) == (
        "GET", "/v1/sandboxes/s/processes/3/output", "application/x-ndjson", True,
    )
    assert core.process_wait("s", 3).req.headers["Accept"] == "application/json"


def test_process_info() -> None:
    p = sandpit.ProcessInfo.from_dict({
        "pid": 33, "argv": ["/bin/sh", "-c", "sleep 600"], "cwd": "/root", "uid": 0,
        "started_at": "2026-11-28T22:55:58.474Z", "workload": False, "running": False,
        "exit_code": None, "signal": 9, "later": True,
    })
    assert (p.pid, p.argv, p.running, p.exit_code, p.signal) == (33, ["/bin/sh", "-c", "sleep 600"], False, None, 9)
    assert p.started_at == datetime(2026, 11, 28, 22, 55, 58, 474000, tzinfo=timezone.utc)
    assert p.raw["later"] is True


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "invalid_input", sandpit.InvalidRequest),
        (400, "bad_request", sandpit.InvalidRequest),
        (401, "unauthorized", sandpit.AuthenticationError),
        (402, "insufficient_funds", sandpit.InsufficientFunds),
        (403, "kyc_required", sandpit.KycRequired),
        (403, "forbidden", sandpit.PermissionDenied),
        (404, "not_found", sandpit.NotFound),
        (409, "wrong_state", sandpit.WrongState),
        (409, "conflict", sandpit.Conflict),
        (413, "payload_too_large", sandpit.PayloadTooLarge),
        (500, "internal", sandpit.InternalError),
        (503, "no_capacity", sandpit.NoCapacity),
        (503, "unavailable", sandpit.Unavailable),
        (507, "no_gpu_capacity", sandpit.NoGpuCapacity),
        (418, "brand_new_code", sandpit.SandpitError),
        (404, "brand_new_code", sandpit.NotFound),
    ],
)
def test_error_classes(status: int, code: str, cls: type) -> None:
    err = error_from_body(status, {"code": code, "message": "m", "field": "f", "extra": 1})
    assert type(err) is cls
    assert (err.status, err.code, err.message, err.field) == (status, code, "m", "f")
    assert err.body["extra"] == 1
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and (back.status, back.code, back.field) == (status, code, "f")


def test_error_without_api_body() -> None:
    err = error_from_body(502, None, "<html>bad gateway</html>")
    assert (err.status, err.code) == (502, "http_502") and "bad gateway" in err.message
    t = sandpit.TransportError("boom")
    assert t.status is None and t.code == "transport_error"
    assert pickle.loads(pickle.dumps(t)).message == "boom"


def test_client_raises_api_errors() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["authorization"] == f"Bearer {KEY}"
        if req.url.path == "/v1/sandboxes/nope":
            return httpx.Response(404, json={"code": "not_found", "message": "sandbox nope not found"})
        return httpx.Response(502, text="upstream down")

    with mock_client(handler) as c:
        with pytest.raises(sandpit.NotFound) as e:
            c.get("nope")
        assert e.value.code == "not_found"
        with pytest.raises(sandpit.SandpitError) as other:
            c.gpus()
        assert other.value.status == 502 and "upstream down" in other.value.message


# -- credentials ------------------------------------------------------------------------------


def test_credentials(tmp_path: Path) -> None:
    file = tmp_path / "credentials.json"
    file.write_text(json.dumps({"url": "http://file:1/", "api_key": "sp_file"}))
    env = {"SANDPIT_URL": "http://env:2", "SANDPIT_API_KEY": "sp_env"}
    assert resolve(environ=env, path=file) == sandpit.Credentials("http://env:2", "sp_env")
    assert resolve(environ={}, path=file) == sandpit.Credentials("http://file:1", "sp_file")
    # Each value separately, as the CLI does.
    assert resolve(environ={"SANDPIT_API_KEY": "sp_env"}, path=file) == sandpit.Credentials("http://file:1", "sp_env")
    assert resolve("http://arg", "sp_arg", environ=env, path=file) == sandpit.Credentials("http://arg", "sp_arg")
    missing = tmp_path / "none.json"
    assert resolve(environ={"SANDPIT_API_KEY": "k"}, path=missing).url == sandpit.DEFAULT_URL
    with pytest.raises(sandpit.CredentialsError) as e:
        resolve(environ={}, path=missing)
    assert "SANDPIT_API_KEY" in e.value.message and e.value.code == "no_credentials"
    file.write_text("not json")
    with pytest.raises(sandpit.CredentialsError):
        resolve(environ={}, path=file)
    assert "sp_" not in repr(resolve("u", "sp_secret", environ={}, path=missing))


# -- streams ----------------------------------------------------------------------------------


def test_line_splitter_across_chunks() -> None:
    s = core.LineSplitter()
    assert s.feed(b"ab") == []
    assert s.feed(b"c\r\nd\n\ne") == [b"abc", b"d", b""]
    assert s.feed("\u2028".encode() + b"f\n") == [b"e\xe2\x80\xa8f"]
    assert s.flush() == []
    assert s.feed(b"tail") == [] and s.flush() == [b"tail"]


def exec_lines(*events: Dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_exec_state_byte_by_byte() -> None:
    wire = exec_lines(
        {"event": "started", "pid": 7},
        {"event": "stdout", "data": base64.b64encode(b"hello\n").decode()},
        {"event": "stderr", "data": base64.b64encode(b"\xff").decode()},
        {"event": "exited", "exit_code": 3, "signal": None, "timed_out": False},
    )
    st = core.ExecState()
    chunks: List[sandpit.OutputChunk] = []
    for i in range(len(wire)):
        chunks += st.feed(wire[i : i + 1])
    chunks += st.finish()
    assert [(c.stream, c.data) for c in chunks] == [("stdout", b"hello\n"), ("stderr", b"\xff")]
    r = st.result()
    assert (r.pid, r.exit_code, r.stdout, r.stderr) == (7, 3, "hello\n", "\ufffd")


def test_exec_state_errors() -> None:
    st = core.ExecState()
    with pytest.raises(sandpit.Unavailable) as e:
        st.feed(exec_lines({"event": "started", "pid": 1}, {"event": "error", "code": "unavailable", "message": "lost"}))
    assert e.value.status == 503 and e.value.message == "lost"
    cut = core.ExecState()
    cut.feed(exec_lines({"event": "started", "pid": 1}))
    with pytest.raises(sandpit.StreamError):
        cut.finish()


def test_sse_logs_and_events() -> None:
    wire = (
        b": keep-alive\n\n"
        b"event: log\nid: 94\ndata: {\"at\":\"2026-11-28T22:10:48.3834Z\",\"stream\":\"stdout\",\"text\":\"a\\u2028b\\n\"}\n\n"
        b"event: log\r\nid: 140\r\ndata: {\"at\":\"2026-11-28T22:10:49Z\",\"stream\":\"system\",\"text\":\"x\",\"new\":1}\r\n\r\n"
        b"event: end\ndata: terminated\n\n"
    )
    st = core.LogFollowState()
    entries = []
    for i in range(0, len(wire), 5):
        entries += st.feed(wire[i : i + 5])
    entries += st.finish()
    assert [(e.stream, e.text, e.offset) for e in entries] == [("stdout", "a\u2028b\n", 94), ("system", "x", 140)]
    assert st.end_state == "terminated" and st.done and st.offset == 140

    ev = core.EventsState()
    out = ev.feed(
        b"event: state\nid: 1\ndata: {\"seq\":1,\"at\":\"2026-11-28T22:10:35.036Z\",\"kind\":\"state\",\"state\":\"running\"}\n\n"
        b"event: progress\nid: 2\ndata: {\"seq\":2,\"at\":\"2026-11-28T22:10:35.036Z\",\"kind\":\"progress\",\"progress\":{\"layer\":\"l\"}}\n\n"
        b"event: state\nid: 3\ndata: {\"seq\":3,\"at\":\"2026-11-28T22:10:36Z\",\"kind\":\"state\",\"state\":\"failed\",\"reason\":\"image_not_found\"}\n\n"
    )
    assert [(e.seq, e.kind, e.state) for e in out] == [(1, "state", "running"), (2, "progress", None), (3, "state", "failed")]
    assert out[1].progress == {"layer": "l"} and out[2].reason == "image_not_found" and ev.done


def test_exec_stream_over_mock_transport() -> None:
    wire = exec_lines(
        {"event": "started", "pid": 3},
        {"event": "stdout", "data": base64.b64encode(b"hi\n").decode()},
        {"event": "exited", "exit_code": 0, "signal": None, "timed_out": False},
    )

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/sandboxes/s1":
            return httpx.Response(200, json={**SANDBOX, "id": "s1"})
        assert req.url.path == "/v1/sandboxes/s1/exec"
        assert req.headers["accept"] == "application/x-ndjson"
        assert json.loads(req.content) == {"shell": "echo hi", "env": {"A": "1"}}
        return httpx.Response(200, content=wire, headers={"content-type": "application/x-ndjson"})

    with mock_client(handler) as c:
        sb = c.get("s1")
        assert sb.raw["some_future_field"] == {"x": 1}
        with sb.exec_stream("echo hi", env={"A": 1}) as s:
            assert s.pid == 3
            assert [c.text for c in s] == ["hi\n"]
        assert s.exit_code == 0 and s.wait().stdout == "hi\n"
        got: List[str] = []
        assert sb.exec("echo hi", env={"A": 1}, on_stdout=lambda c: got.append(c.text)).ok and got == ["hi\n"]
