"""The guest in-process: its C touch loop against a real userfaultfd, its access patterns and
traces. No destination, no subprocess."""

from helpers.uffd import new_uffd, resolver, toucher  # noqa: F401 (fixtures)
