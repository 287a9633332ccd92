"""Where a daemon listens, and the rule both daemons share: beyond loopback only with a token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .errors import MigratorError

__all__ = ["Listen", "check_exposure"]


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        """'127.0.0.1:8470', '[::1]:8470', 'localhost:8470' or ':8470' (loopback)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"cannot read listen address {text!r}: write HOST:PORT, "
                             f"e.g. 127.0.0.1:8470")
        host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
        return cls(host, int(port))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    def url(self, port: int | None = None, tls: bool = False) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if tls else "http"
        return f"{scheme}://{host}:{self.port if port is None else port}"


def check_exposure(listen: Listen, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token (MigratorError with the way out).

    The source serves the guest's memory; the destination's status names the migration and
    its token is the one it shows the source. Neither is for whoever can reach the port.
    """
    if token is None and not listen.is_loopback:
        raise MigratorError(
            f"refusing to listen on {listen.host}:{listen.port} without a token: anyone who can "
            f"reach it could read the guest's memory or its migration. Pass --token-file FILE "
            f"(or set MIGRATOR_TOKEN), or listen on 127.0.0.1")
