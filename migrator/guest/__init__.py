"""The synthetic guest: a VMM-like process whose vCPU threads touch memory and measure stalls."""
