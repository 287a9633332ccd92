"""The SQLite workload's queries: their SQL, their kinds and the checksum of their answers.

The guest's C loop (migrator/_cffi_src/workload_sqlite.c) runs these statements, statement i
being kind i; answer() runs one with Python's own sqlite3 over a local file, so the answers a
guest got over migrated memory can be checked against a copy that never migrated.
"""

from __future__ import annotations

import sqlite3

KINDS = ("point", "range", "join")
SQL = (
    # point lookup through the unique index on customers.code
    "SELECT id, region, balance FROM customers WHERE code = ?1",
    # range scan of the index on orders.placed, and the rows it finds
    "SELECT count(*), sum(quantity), min(id), max(id) FROM orders "
    "WHERE placed BETWEEN ?1 AND ?1 + ?2",
    # a customer's orders (index on orders.customer_id) joined with customers and items
    "SELECT count(*), sum(o.quantity * i.price), max(c.region) FROM orders o "
    "JOIN customers c ON c.id = o.customer_id JOIN items i ON i.id = o.item_id "
    "WHERE o.customer_id = ?1",
)
META_SQL = "SELECT customers, items, orders, placed_max FROM meta"
RANGE_SPAN = 400  # placed values a range scan covers: about 100 orders
CODE_SCRAMBLE = 2654435761  # customers.code = id * this mod 2**32, a bijection

_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def parse_mix(text: str) -> tuple[int, ...]:
    """'70:20:10' -> weights of point, range, join."""
    parts = text.split(":")
    try:
        weights = tuple(int(p) for p in parts)
    except ValueError:
        weights = ()
    if len(weights) != len(KINDS) or any(w < 0 for w in weights) or not sum(weights):
        raise ValueError(f"{text!r}: the mix is {':'.join(KINDS)} as whole-number weights, "
                         "e.g. 70:20:10")
    return weights


def checksum(rows: list[tuple]) -> int:
    """The C loop's checksum of an answer: every column as a 64-bit integer, FNV-1a style."""
    h = _FNV_OFFSET
    for row in rows:
        for v in row:
            h = ((h ^ ((v or 0) & _MASK)) * _FNV_PRIME) & _MASK
    return h


def answer(db: sqlite3.Connection, kind: int, param: int) -> tuple[int, int]:
    """(rows, checksum) of query kind with parameter param."""
    args = (param, RANGE_SPAN) if "?2" in SQL[kind] else (param,)
    rows = db.execute(SQL[kind], args).fetchall()
    return len(rows), checksum(rows)
