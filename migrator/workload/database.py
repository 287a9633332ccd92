"""`migrator workload build-sqlite`: a deterministic SQLite database of a given size.

Orders, customers and items, with the indexes the queries use (queries.py). The rows come
from integer hashes of their ids inside SQLite (no random(): the same size gives the same
bytes with the same SQLite library), in batches until the next would not fit; the file is then
padded with zeros to exactly SIZE, so it can be served as a guest image (a multiple of 2 MiB).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..units import format_size

PAGE_SIZE = 4096  # SQLite's page is the guest's 4 KiB page
ITEMS = 10_000
ORDERS_PER_CUSTOMER = 8
MIN_SIZE = 4 << 20
_ALIGN = 2 << 20

SCHEMA = """
CREATE TABLE meta(customers INTEGER, items INTEGER, orders INTEGER, placed_max INTEGER);
CREATE TABLE customers(id INTEGER PRIMARY KEY, code INTEGER NOT NULL, region INTEGER NOT NULL,
                       balance INTEGER NOT NULL, name TEXT NOT NULL);
CREATE UNIQUE INDEX customers_code ON customers(code);
CREATE TABLE items(id INTEGER PRIMARY KEY, price INTEGER NOT NULL, name TEXT NOT NULL);
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                    item_id INTEGER NOT NULL, quantity INTEGER NOT NULL,
                    placed INTEGER NOT NULL, note TEXT NOT NULL);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX orders_placed ON orders(placed);
"""

# h(x): a 32-bit multiplicative hash, the same in every run
_H = "(({x}) * 2654435761 % 4294967296)"


def _h(x: str) -> str:
    return _H.format(x=x)


_ITEMS_SQL = f"""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ITEMS})
INSERT INTO items SELECT i, 100 + {_h('i')} % 9900, printf('item %05d', i) FROM n
"""

_CUSTOMERS_SQL = f"""
WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
INSERT INTO customers SELECT i, i * 2654435761 % 4294967296, {_h('i + 7')} % 64,
       {_h('i + 13')} % 1000000, printf('customer %d', i) FROM n
"""

_ORDERS_SQL = f"""
WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
INSERT INTO orders SELECT i, 1 + {_h('i')} % ?3, 1 + {_h('i + 1')} % {ITEMS},
       1 + {_h('i + 2')} % 9, i * 4 + {_h('i + 3')} % 4,
       printf('order %d placed by the customer: %.*s', i, 16 + {_h('i + 5')} % 48,
              'deliver to the back door, ring twice, leave with the neighbour if out, thanks')
FROM n
"""


def _size(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA page_count").fetchone()[0] * PAGE_SIZE


def build(size: int, out: str | os.PathLike,
          progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the database to out, padded to exactly size bytes; return what it holds."""
    if size < MIN_SIZE or size % _ALIGN:
        raise ValueError(f"--size {size}: a multiple of 2 MiB, at least {format_size(MIN_SIZE)} "
                         f"(e.g. 512MiB)")
    out = Path(out)
    tmp = out.with_name(out.name + ".building")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        for pragma in (f"page_size={PAGE_SIZE}", "journal_mode=OFF", "synchronous=OFF",
                       "locking_mode=EXCLUSIVE", "cache_size=-262144"):
            db.execute(f"PRAGMA {pragma}")
        db.executescript(SCHEMA)
        db.execute(_ITEMS_SQL)
        batch = max(2_000, size // 64 // 130)  # ~130 bytes an order with its index entries
        orders = customers = 0
        grew = 0
        while _size(db) + grew * 1.1 + PAGE_SIZE * 64 < size:
            before = _size(db)
            db.execute("BEGIN")
            new_customers = customers + batch // ORDERS_PER_CUSTOMER
            db.execute(_CUSTOMERS_SQL, (customers + 1, new_customers))
            db.execute(_ORDERS_SQL, (orders + 1, orders + batch, new_customers))
            db.execute("COMMIT")
            customers, orders = new_customers, orders + batch
            grew = _size(db) - before
            if progress:
                progress(_size(db), size)
        if not orders:
            raise ValueError(f"--size {format_size(size)} is too small for one batch of orders")
        db.execute("INSERT INTO meta VALUES (?, ?, ?, ?)",
                   (customers, ITEMS, orders, orders * 4 + 3))
        used = _size(db)
    finally:
        db.close()
    if used > size:  # truncating would cut the database
        raise ValueError(f"the database came out {used} bytes, over --size {format_size(size)}")
    os.truncate(tmp, size)  # zeros after the last page: SQLite reads its size from the header
    tmp.replace(out)
    return {"path": str(out), "size": size, "database_bytes": used, "customers": customers,
            "items": ITEMS, "orders": orders, "sqlite": sqlite3.sqlite_version}
