"""Exceptions raised by the sandpit SDK.

Every error the API answers becomes a :class:`SandpitError` (or one of its subclasses) carrying
the HTTP ``status``, the API's machine-readable ``code`` (``not_found``, ``kyc_required``, ...),
the human ``message`` and, when the API names one, the request ``field`` it is about.
Failures to reach the server at all are :class:`TransportError` (``status`` is ``None``).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "SandpitError",
    "InvalidRequest",
    "AuthenticationError",
    "Unauthorized",
    "PermissionDenied",
    "KycRequired",
    "InsufficientFunds",
    "NotFound",
    "Conflict",
    "WrongState",
    "PayloadTooLarge",
    "NoCapacity",
    "Unavailable",
    "NoGpuCapacity",
    "InternalError",
    "TransportError",
    "TransportTimeout",
    "StreamError",
    "CredentialsError",
]


class SandpitError(Exception):
    """An error answered by the sandpit API (or met while talking to it).

    Attributes:
        status: the HTTP status (``None`` for transport errors).
        code: the API's error code, e.g. ``"invalid_input"``, ``"not_found"``, ``"kyc_required"``.
        message: what went wrong, for people.
        field: the request field the error is about (``"cpu"``, ``"gpu.count"``), if any.
        state: the sandbox's state, for ``wrong_state`` errors.
        body: the whole decoded error body (unknown keys included).
    """

    status: Optional[int]
    code: str
    message: str
    field: Optional[str]
    state: Optional[str]
    body: Dict[str, Any]

    def __init__(
        self,
        status: Optional[int],
        code: str,
        message: str,
        field: Optional[str] = None,
        *,
        state: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.state = state
        self.body = dict(body) if body is not None else {}
        super().__init__(status, code, message, field)

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.__dict__.copy()))

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, field={self.field!r})"
        )


class InvalidRequest(SandpitError):
    """400: a field is invalid (``invalid_input``, naming ``field``) or the request is malformed
    (``bad_request``)."""


class AuthenticationError(SandpitError):
    """401: no API key, or an unknown or revoked one (``unauthorized``); or a bad webhook
    signature (``bad_signature``)."""


Unauthorized = AuthenticationError
"""Alias of :class:`AuthenticationError`."""


class PermissionDenied(SandpitError):
    """403: the caller may not do this (``forbidden``)."""


class KycRequired(PermissionDenied):
    """403 ``kyc_required``: the user must complete identity verification first."""


class InsufficientFunds(SandpitError):
    """402 ``insufficient_funds``: the project's wallet cannot pay for this."""


class NotFound(SandpitError):
    """404: no such thing, or not the caller's (``not_found``); or a disabled feature
    (``feature_disabled``)."""


class Conflict(SandpitError):
    """409: a unique value is taken (``conflict``, naming ``field``)."""


class WrongState(Conflict):
    """409 ``wrong_state``: the operation does not apply in the sandbox's state (``.state``)."""


class PayloadTooLarge(SandpitError):
    """413 ``payload_too_large``."""


class Unavailable(SandpitError):
    """503: the sandbox is not reachable right now (``unavailable``)."""


class NoCapacity(Unavailable):
    """503 ``no_capacity``: no room for the CPU, memory or disk asked for."""


class NoGpuCapacity(SandpitError):
    """507 ``no_gpu_capacity``: no GPU matching the request is free."""


class InternalError(SandpitError):
    """500 ``internal`` (details are in the server's log under the request id in the message)."""


class TransportError(SandpitError):
    """The server could not be reached or the connection failed (``code`` ``"transport_error"``,
    ``status`` ``None``). The underlying exception is ``__cause__``."""

    def __init__(self, message: str, code: str = "transport_error") -> None:
        super().__init__(None, code, message)


class TransportTimeout(TransportError):
    """The request timed out (``code`` ``"timeout"``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="timeout")


class StreamError(SandpitError):
    """A stream (exec output, logs, events) broke off or carried something undecodable
    (``code`` ``"stream_error"`` unless the server named one)."""


class CredentialsError(SandpitError):
    """No API key could be found, or the credentials file is unreadable (``code``
    ``"no_credentials"``)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "no_credentials", message)


def _rebuild(cls: Type[SandpitError], state: Dict[str, Any]) -> SandpitError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("status"), state.get("code"), state.get("message"), state.get("field"))
    err.__dict__.update(state)
    return err


_BY_CODE: Dict[str, Type[SandpitError]] = {
    "invalid_input": InvalidRequest,
    "bad_request": InvalidRequest,
    "unauthorized": AuthenticationError,
    "bad_signature": AuthenticationError,
    "forbidden": PermissionDenied,
    "kyc_required": KycRequired,
    "insufficient_funds": InsufficientFunds,
    "not_found": NotFound,
    "feature_disabled": NotFound,
    "wrong_state": WrongState,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "no_gpu_capacity": NoGpuCapacity,
    "no_capacity": NoCapacity,
    "unavailable": Unavailable,
    "internal": InternalError,
}

_BY_STATUS: Dict[int, Type[SandpitError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    402: InsufficientFunds,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    500: InternalError,
    503: Unavailable,
    507: NoGpuCapacity,
}

# The status the API gives each code, for errors that arrive inside a stream.
_STATUS_OF_CODE: Dict[str, int] = {
    "invalid_input": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "bad_signature": 401,
    "insufficient_funds": 402,
    "forbidden": 403,
    "kyc_required": 403,
    "not_found": 404,
    "feature_disabled": 404,
    "wrong_state": 409,
    "conflict": 409,
    "payload_too_large": 413,
    "internal": 500,
    "no_capacity": 503,
    "unavailable": 503,
    "no_gpu_capacity": 507,
}


def error_from_body(status: Optional[int], body: Any, fallback_text: str = "") -> SandpitError:
    """Builds the exception for an error answer: by the body's ``code`` first, else by status."""
    if isinstance(body, Mapping) and isinstance(body.get("code"), str):
        code = str(body["code"])
        message = str(body.get("message") or code)
        field = body.get("field")
        state = body.get("state")
        cls = _BY_CODE.get(code) or (_BY_STATUS.get(status, SandpitError) if status else SandpitError)
        if status is None:
            status = _STATUS_OF_CODE.get(code)
        return cls(
            status,
            code,
            message,
            field if isinstance(field, str) else None,
            state=state if isinstance(state, str) else None,
            body=body,
        )
    # Not the API's error format (a proxy in between, say): keep what there is.
    code = f"http_{status}" if status is not None else "unknown"
    cls = _BY_STATUS.get(status, SandpitError) if status is not None else SandpitError
    text = fallback_text.strip()[:500] or f"HTTP {status}"
    return cls(status, code, text)
