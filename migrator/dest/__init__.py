"""The destination daemon: resolves a guest's faults from the source, pulls the rest, verifies."""
