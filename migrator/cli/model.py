"""`migrator model`: placeholder, filled below."""


def register(sub) -> None:
    pass
