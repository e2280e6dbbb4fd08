"""Configuration shared by :class:`sandpit.Client` and :class:`sandpit.AsyncClient`."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import httpx

from ._config import resolve
from ._core import USER_AGENT
from .types import SandboxData

DEFAULT_TIMEOUT = 60.0


class _ClientConfig:
    url: str
    _headers: Dict[str, str]

    def _configure(
        self,
        url: Optional[str],
        api_key: Optional[str],
        headers: Optional[Mapping[str, str]],
    ) -> None:
        creds = resolve(url, api_key)
        self.url = creds.url
        self._headers = {
            "Authorization": f"Bearer {creds.api_key}",
            "User-Agent": USER_AGENT,
            **(headers or {}),
        }

    @staticmethod
    def _timeout(timeout: Union[None, float, httpx.Timeout]) -> httpx.Timeout:
        if isinstance(timeout, httpx.Timeout):
            return timeout
        return httpx.Timeout(timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"


class _SandboxBase(SandboxData):
    """The data part of a sandbox handle; refreshed in place by every call that answers with
    the sandbox."""

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.id))

    def _update(self, fields: Dict[str, Any]) -> None:
        for k, v in fields.items():
            setattr(self, k, v)
