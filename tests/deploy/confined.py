"""Run `migrator ARGS...` in this process under MemoryDenyWriteExecute, as the units ask.

    python confined.py dest --listen ...

The kernel's PR_SET_MDWE (Linux >= 6.3) refuses writable+executable mappings and adding
PROT_EXEC later, the rule systemd's MemoryDenyWriteExecute=yes enforces. With
MIGRATOR_TEST_MDWE=0 it runs without (kernels that lack the prctl).
"""

import ctypes
import os
import sys

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

if os.environ.get("MIGRATOR_TEST_MDWE", "1") == "1":
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_MDWE): {os.strerror(ctypes.get_errno())}")

from migrator.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
