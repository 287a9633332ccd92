"""Renamed migrator.quantiles (one `stats` module was one too many beside source/stats.py).

Kept only while the data plane's rewrite (dest/migration.py, dest/telemetry.py) still imports
it from here; delete this file once they import migrator.quantiles.
"""

from .quantiles import QUANTILES, quantile, summarize  # noqa: F401
