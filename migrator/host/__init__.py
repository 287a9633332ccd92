"""What this host can do for migrator (`migrator host check`), and its hugetlb pools."""

from .report import HGM_EMULATED, SCHEMA, build, exit_code

__all__ = ["HGM_EMULATED", "SCHEMA", "build", "exit_code"]
