"""Real workloads for the guest: a SQLite database whose pages are the migrated memory."""
