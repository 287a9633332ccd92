"""`migrator dest`: the destination daemon."""

from __future__ import annotations

import argparse
import logging

from ..auth import load_token
from ..units import parse_size
from .backing import MODES


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:8471")
    return host, int(port)


def register(sub) -> None:
    p = sub.add_parser("dest", help="run the destination daemon (resolves a guest's faults)")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 8471), metavar="HOST:PORT")
    p.add_argument("--source", required=True, help="the source's URL, e.g. http://127.0.0.1:8470")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--hugepage-size", type=parse_size, default=parse_size("1G"), metavar="1G|2M")
    p.add_argument("--guest-socket", required=True, metavar="PATH")
    p.add_argument("--token-file", help="file holding the bearer token (else $MIGRATOR_TOKEN)")
    p.add_argument("--background-delay", type=float, default=0.0, metavar="SECONDS",
                   help="start the background pull this long after a guest connects "
                        "(benchmarks use it to measure faults alone)")
    p.add_argument("--resume-deadline", type=float, default=60.0, metavar="SECONDS",
                   help="how long a broken link to the source may take to come back before "
                        "the migration fails (vCPUs wait meanwhile)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .daemon import DestDaemon, serve
    from .migration import SourceLink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.hugepage_size not in (2 << 20, 1 << 30):
        raise SystemExit("--hugepage-size must be 2M or 1G")
    source = SourceLink(args.source.rstrip("/"), load_token(args.token_file))
    daemon = DestDaemon(source, args.mode, args.hugepage_size, args.guest_socket,
                        background_delay=args.background_delay,
                        resume_deadline=args.resume_deadline)
    serve(daemon, *args.listen)
    return 0
