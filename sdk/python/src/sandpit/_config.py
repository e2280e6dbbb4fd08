"""Where the SDK finds its server and key, as the ``sandpit`` CLI does."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .errors import CredentialsError

DEFAULT_URL = "http://127.0.0.1:7700"
URL_VAR = "SANDPIT_URL"
KEY_VAR = "SANDPIT_API_KEY"


def credentials_path(environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """``$HOME/.config/sandpit/credentials.json``, where ``sandpit serve`` writes its first key."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or (str(Path.home()) if environ is None else "")
    return Path(home) / ".config" / "sandpit" / "credentials.json" if home else None


@dataclass(frozen=True)
class Credentials:
    url: str
    api_key: str

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, api_key='<redacted>')"


def resolve(
    url: Optional[str] = None,
    api_key: Optional[str] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    path: Optional[Path] = None,
) -> Credentials:
    """Each of the URL and the key comes from the argument, else ``$SANDPIT_URL`` /
    ``$SANDPIT_API_KEY``, else ``~/.config/sandpit/credentials.json``; the URL defaults to
    ``http://127.0.0.1:7700``."""
    env = os.environ if environ is None else environ
    url = url or env.get(URL_VAR) or None
    api_key = api_key or env.get(KEY_VAR) or None
    file = path if path is not None else credentials_path(environ)
    if (url is None or api_key is None) and file is not None:
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raw = None
        except OSError as e:
            raise CredentialsError(f"cannot read {file}: {e}") from e
        if raw is not None:
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise CredentialsError(
                    f'{file} is not a sandpit credentials file ({{"url": ..., "api_key": ...}}): {e}'
                ) from e
            url = url or (str(data["url"]) if data.get("url") else None)
            api_key = api_key or (str(data["api_key"]) if data.get("api_key") else None)
    if api_key is None:
        where = f", or start a server with `sandpit serve`, which writes {file}" if file else ""
        raise CredentialsError(f"no API key found: pass api_key=, or set {KEY_VAR} (and {URL_VAR}){where}")
    return Credentials(url=(url or DEFAULT_URL).rstrip("/"), api_key=api_key)
