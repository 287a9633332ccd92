"""Bearer tokens: where they come from, and how they are compared."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from .errors import MigratorError

TOKEN_ENV = "MIGRATOR_TOKEN"


def load_token(token_file: str | None) -> str | None:
    """The token from --token-file, else $MIGRATOR_TOKEN, else None (no auth)."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise MigratorError(f"cannot read --token-file {token_file}: {e.strerror}") from e
        if not token:
            raise MigratorError(f"--token-file {token_file} is empty: put the shared token in it")
        return token
    return os.environ.get(TOKEN_ENV) or None


def bearer_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header against the token.

    Anything else is no match: no header, another scheme, a bare token without "Bearer", bytes
    that are not UTF-8 (encoded with replacement, never an exception that would answer 500).
    """
    scheme, _, presented = (header or "").partition(" ")
    # Compare whatever the scheme: the time taken must not tell which part was wrong.
    same = hmac.compare_digest(presented.encode("utf-8", "replace"), token.encode())
    return same and scheme.lower() == "bearer"
