"""`migrator dest`: the destination daemon."""

from __future__ import annotations

import argparse
import logging

from ..auth import load_token
from ..listen import Listen, check_exposure
from ..tls import TLSFileError, client_context, server_context_from_args
from ..units import parse_size
from .backing import MODES


def _listen(text: str) -> Listen:
    try:
        return Listen.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub) -> None:
    p = sub.add_parser("dest", help="run the destination daemon (resolves a guest's faults)")
    p.add_argument("--listen", type=_listen, default=Listen("127.0.0.1", 8471), metavar="HOST:PORT",
                   help="address of the status/metrics/dashboard HTTP server (default "
                        "127.0.0.1:8471; beyond loopback a token is required)")
    p.add_argument("--source", required=True,
                   help="the source's URL, e.g. http://127.0.0.1:8470 or https://src.example:8470")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--hugepage-size", type=parse_size, default=parse_size("1G"), metavar="1G|2M")
    p.add_argument("--guest-socket", required=True, metavar="PATH")
    p.add_argument("--token-file", help="file holding the bearer token (else $MIGRATOR_TOKEN)")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve HTTPS with this PEM certificate (chain); needs --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="trust an https:// --source whose certificate this PEM CA signed (or "
                        "that certificate itself); default: the system's trusted CAs")
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
    token = load_token(args.token_file)
    check_exposure(args.listen, token)
    try:
        server_ssl = server_context_from_args(args.tls_cert, args.tls_key)
        client_ssl = _client_context(args.source, args.tls_ca)
    except TLSFileError as e:
        raise SystemExit(f"migrator dest: {e}") from None
    source = SourceLink(args.source.rstrip("/"), token, client_ssl)
    daemon = DestDaemon(source, args.mode, args.hugepage_size, args.guest_socket,
                        background_delay=args.background_delay,
                        resume_deadline=args.resume_deadline)
    serve(daemon, args.listen.host, args.listen.port, ssl_context=server_ssl)
    return 0


def _client_context(source: str, ca: str | None):
    if not source.lower().startswith("https://"):
        if ca is not None:
            raise TLSFileError(f"--tls-ca {ca} is for an https:// --source; {source} is "
                               f"plain HTTP: write https://... or drop --tls-ca")
        return None
    return client_context(ca)
