"""What can go wrong talking to a source. Connection-level failures are ConnectionErrors."""

from __future__ import annotations

import ssl


class SourceConnectionError(ConnectionError):
    """The source could not be reached or talked to; `url` says which."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class SourceUnreachable(SourceConnectionError):
    """Connecting failed: refused, unresolvable, or timed out."""


class StreamBroken(SourceConnectionError):
    """An established connection failed, closed or timed out mid-conversation; it is unusable."""


class SourceRefused(SourceConnectionError):
    """The source answered with an HTTP error status instead of what was asked for."""

    def __init__(self, message: str, *, url: str, status: int) -> None:
        super().__init__(message, url=url)
        self.status = status


class Unauthorized(SourceRefused):
    """HTTP 401: the token is missing or not the source's."""


class SourceTLSError(Exception):
    """The TLS handshake with the source failed in a way no retry can fix: its certificate is
    not trusted (or names another host), or it does not speak TLS. Deliberately not a
    ConnectionError, so nothing waits for it to go away."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


def tls_failure(e: ssl.SSLError, url: str) -> SourceTLSError | None:
    """A handshake failure that retrying cannot fix, as a SourceTLSError; None for the others."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return SourceTLSError(
            f"{url}: the source's TLS certificate is not trusted "
            f"({(e.verify_message or e.reason or 'verification failed').rstrip('.')}): pass the "
            f"CA that signed it (or the certificate itself) with --tls-ca, and name the source "
            f"by a host name or IP address the certificate holds", url=url)
    if e.reason == "WRONG_VERSION_NUMBER":
        return SourceTLSError(
            f"{url}: the source does not speak TLS on that port (wrong version number): write "
            f"http://, or start the source with --tls-cert and --tls-key", url=url)
    return None


class StreamError(Exception):
    """A non-OK reply on a page stream; the stream stays usable for further requests."""

    def __init__(self, status: int, message: str, request_id: int) -> None:
        super().__init__(f"request {request_id} refused with status {status}: {message}")
        self.status = status
        self.message = message
        self.request_id = request_id


def reason(e: BaseException) -> str:
    """A short why for an OSError: 'Connection refused', 'timed out', ..."""
    if isinstance(e, TimeoutError):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
