"""The local experiment: the same guest image and access sequence, migrated in each mode."""
