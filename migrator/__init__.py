"""migrator: a postcopy live-migration emulator (1 GiB hugetlb, with and without HGM)."""

__version__ = "0.1.0"
