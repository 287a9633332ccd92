"""What this host can do for migrator (check), its hugetlb pools (pools), HGM detection (hgm)."""
