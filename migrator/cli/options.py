"""Options more than one command takes, defined once: sizes, listen addresses, the token, TLS,
memory errors to inject, and the synthetic guest's workload."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..guest.patterns import PATTERNS
from ..listen import Listen
from ..units import parse_size

HUGEPAGE_SIZES = (2 << 20, 1 << 30)


def _typed(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from a parser that raises ValueError with a message for people."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


size = _typed(parse_size)
listen_address = _typed(Listen.parse)


def _hugepage_size(text: str) -> int:
    n = parse_size(text)
    if n not in HUGEPAGE_SIZES:
        raise ValueError(f"{text}: a huge page is 2M or 1G")
    return n


hugepage_size = _typed(_hugepage_size)


def count(text: str) -> int:
    """A whole number of things, 1 or more."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: at least 1")
    return n


def add_listen(p: argparse.ArgumentParser, port: int, what: str) -> None:
    p.add_argument("--listen", type=listen_address, default=Listen("127.0.0.1", port),
                   metavar="HOST:PORT",
                   help=f"address of {what} (default 127.0.0.1:{port}; port 0 picks a free "
                        f"one; beyond loopback a token is required)")


def add_hugepage_size(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--hugepage-size", type=hugepage_size, default=parse_size(default),
                   metavar="1G|2M" if default == "1G" else "2M|1G",
                   help=f"huge page size of the guest's layout (default {default})")


def add_token_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token-file", metavar="FILE",
                   help="file holding the bearer token (default: $MIGRATOR_TOKEN, else no auth)")


def add_tls_server(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve HTTPS with this PEM certificate (chain); needs --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")


def add_background_policy(p: argparse.ArgumentParser) -> None:
    """How the destination's background pull shares the link with urgent faults."""
    from ..dest.dataplane import BackgroundPolicy

    g = p.add_argument_group("background pull", "how the pages nobody faulted on are pulled, "
                             "beside the urgent faults (defaults measured on a 2-core VM; see "
                             "the README's Benchmarks)")
    g.add_argument("--background-delay", type=float, default=0.0, metavar="SECONDS",
                   help="start it this long after a guest connects (benchmarks use it to "
                        "measure faults alone)")
    g.add_argument("--background-cap", type=size, default=0, metavar="BYTES",
                   help="at most this many bytes per second on the wire, e.g. 500MiB (QEMU's "
                        "max-postcopy-bandwidth; default 0: no cap)")
    g.add_argument("--background-window", type=count, default=BackgroundPolicy.window,
                   metavar="N", help=f"chunks' worth of data bytes in flight, in as many runs of absent "
                        f"granules as that takes (default {BackgroundPolicy.window})")
    g.add_argument("--background-chunk", type=size, default=BackgroundPolicy.chunk_bytes,
                   metavar="BYTES", help="claimed, fetched and installed together (default "
                   f"{BackgroundPolicy.chunk_bytes >> 20}MiB; at least one granule)")
    g.add_argument("--no-background-preempt", dest="background_preempt", action="store_false",
                   help="keep pulling while faults are being served (default: when the guest's "
                        "vCPUs can fill the host's CPUs, request nothing new while a fault's "
                        "fetch is in flight or a fault came in the last 0.5 ms, unless a vCPU "
                        "waits on the pull itself)")


def background_policy(args: argparse.Namespace):
    from ..dest.dataplane import BackgroundPolicy

    return BackgroundPolicy(delay=args.background_delay, chunk_bytes=args.background_chunk,
                            window=args.background_window, cap_bytes_per_s=args.background_cap,
                            preempt=args.background_preempt)


def add_poison(p: argparse.ArgumentParser, where: str) -> None:
    poison = p.add_mutually_exclusive_group()
    poison.add_argument("--poison", type=float, default=0.0, metavar="RATE",
                        help=f"poison this fraction of 4 KiB pages {where} (memory errors), "
                             "e.g. 0.0001")
    poison.add_argument("--poison-pages", metavar="LIST",
                        help=f"poison exactly these 4 KiB pages {where}, e.g. 12,4096-4100")


def add_corruption(p: argparse.ArgumentParser) -> None:
    """Wrong bytes in the source's page replies, to exercise the destination's checks."""
    g = p.add_argument_group("corruption injection", "serve wrong page bytes on the page "
                             "streams (a flipped bit, another offset's page, a stale version, "
                             "a short frame), so the destination's refetch and failure paths run")
    g.add_argument("--inject-corruption", type=_typed(_ratio), default=0.0, metavar="RATE",
                   help="serve this fraction of 4 KiB pages wrong once each, e.g. 0.01: the "
                        "next request for the page is served right (default 0)")
    g.add_argument("--inject-corruption-pages", metavar="LIST",
                   help="serve these 4 KiB pages wrong every time, e.g. 12,4096-4100: the "
                        "migration must fail naming one")


def add_workload(p: argparse.ArgumentParser, accesses: int, seed: int) -> None:
    """The synthetic guest's vCPUs and what they touch."""
    p.add_argument("--vcpus", type=count, default=4)
    p.add_argument("--pattern", choices=PATTERNS, default="zipf")
    p.add_argument("--accesses", type=count, default=accesses,
                   help=f"accesses per vCPU (default {accesses})")
    p.add_argument("--write-ratio", type=_typed(_ratio), default=0.2,
                   help="fraction of accesses that are writes, within [0, 1] (default 0.2)")
    p.add_argument("--seed", type=int, default=seed)


def _ratio(text: str) -> float:
    x = float(text)
    if not 0 <= x <= 1:
        raise ValueError(f"{text}: a fraction within [0, 1]")
    return x


def add_real_workload(p: argparse.ArgumentParser) -> None:
    """A real workload instead of a pattern, and how long the guest runs after the migration."""
    g = p.add_argument_group("real workload", "a SQLite database as the guest image (build it "
                             "with `migrator workload build-sqlite`), queried by every vCPU")
    g.add_argument("--workload", choices=("pattern", "sqlite"), default="pattern",
                   help="pattern: --pattern's synthetic accesses (default); sqlite: queries")
    g.add_argument("--mix", type=_typed(_mix), default=(70, 20, 10), metavar="P:R:J",
                   help="weights of point lookups, range scans and joins (default 70:20:10)")
    g.add_argument("--rate", type=_typed(_rate), default=1000.0, metavar="QPS",
                   help="queries per second per vCPU, open loop: each query is due at its "
                        "time and its latency counts from then (default 1000; 0: as fast "
                        "as they go)")
    g.add_argument("--after", type=_typed(_seconds), default=None, metavar="SECONDS",
                   help="once memory has fully arrived, go on this long and measure the access "
                        "(or query) rate (default: the sqlite workload 2s; patterns 5 rounds "
                        "of random loads)")


def real_workload(args: argparse.Namespace):
    """The sqlite workload args ask for, or None (a pattern)."""
    if args.workload != "sqlite":
        return None
    from ..guest.sqlite import Workload

    if args.after is None:
        args.after = 2.0
    return Workload(mix=args.mix, rate=args.rate, seed=args.seed)


def _mix(text: str) -> tuple[int, ...]:
    from ..workload.queries import parse_mix

    return parse_mix(text)


def _rate(text: str) -> float:
    x = float(text)
    if x < 0:
        raise ValueError(f"{text}: queries per second, 0 or more")
    return x


def _seconds(text: str) -> float:
    x = float(text)
    if not 0 < x <= 3600:
        raise ValueError(f"{text}: seconds, more than 0 and at most 3600")
    return x
