"""Whether a migration may stand behind a figure: it completed, and every page was proved.

A ratio from a migration that failed, stopped early or installed a wrong page would measure
something else; the bench names what was wrong instead and prints no figure.
"""

from __future__ import annotations


class Refused(Exception):
    """No figure: the message says which migration, or which reference, and what was wrong."""


def problems(migration: dict | None, guest_verify: dict | None, *,
             vcpus_blocked: bool = False, guest_exit_status: int | None = None) -> list[str]:
    """What keeps this migration from counting (empty: it completed verified).

    migration: the destination's report of it (phase, error, verified_pages, pages_total,
    mismatched_pages, poison); guest_verify: the guest's own check of its memory at the end.
    """
    if migration is None:
        return ["the destination gave no report of it"]
    found = []
    phase = migration.get("phase")
    if phase != "complete":
        error = migration.get("error")
        found.append(f"phase {phase}" + (f" ({error})" if error else ""))
    if vcpus_blocked:
        found.append("its vCPUs were left blocked on faults")
    # Pages in a granule poisoned before its install are never fetched, so never verified (the
    # destination counts them when it decides the phase); any other shortfall means pages the
    # guest may read were never checked.
    expected = migration.get("pages_total")
    verified = migration.get("verified_pages")
    poisoned = (migration.get("poison") or {}).get("errors")
    if expected is None or verified is None or (verified != expected and not poisoned):
        found.append(f"verified {verified} of {expected} pages")
    if migration.get("mismatched_pages"):
        found.append(f"{migration['mismatched_pages']} page(s) mismatched")
    if guest_verify is None:
        found.append("the guest did not check its memory")
    else:
        if guest_verify.get("mismatched_pages"):
            found.append(f"the guest found {guest_verify['mismatched_pages']} wrong page(s)")
        if guest_verify.get("writes_lost"):
            found.append(f"the guest lost {guest_verify['writes_lost']} write(s)")
    if guest_exit_status:
        found.append(f"the guest exited with status {guest_exit_status}")
    return found


def require(what: str, found: list[str]) -> None:
    """Raise Refused naming `what` (e.g. "P1 run 2") if there is anything in found."""
    if found:
        raise Refused(f"{what} did not complete verified: {'; '.join(found)}")


def gist(text: str) -> str:
    """What a failure's message with a log in it says, on one line: its first line and the
    log's last (the line of a traceback that says what happened)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "(nothing)"
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
