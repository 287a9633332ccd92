from e2e.conftest import Dest, dest_factory, pool_2m, run_guest, source  # noqa: F401
