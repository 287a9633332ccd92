"""Base URLs of a source: http://host:port[/prefix] or https://..."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class BaseURL:
    text: str
    https: bool
    host: str
    port: int
    prefix: str  # path before /v1/..., no trailing slash

    @classmethod
    def parse(cls, base_url: str) -> BaseURL:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"cannot use source URL {base_url!r}: write http://HOST:PORT, "
                             f"e.g. http://127.0.0.1:8470")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise ValueError(f"cannot use source URL {base_url!r}: {e}") from None
        return cls(base_url.rstrip("/"), parts.scheme == "https", parts.hostname, port,
                   parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.text}{path}"
