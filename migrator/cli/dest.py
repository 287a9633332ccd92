"""`migrator dest`: the destination daemon."""

from __future__ import annotations

import logging

from ..auth import load_token
from ..dest.backing import MODES
from ..dest.dataplane import BackgroundPolicy
from ..errors import MigratorError
from ..listen import check_exposure
from ..units import parse_size
from ..tls import TLSFileError, client_context, server_context_from_args
from . import options


def register(sub) -> None:
    p = sub.add_parser("dest", help="run the destination daemon (resolves a guest's faults)")
    options.add_listen(p, 8471, "the status/metrics/dashboard HTTP server")
    p.add_argument("--source", required=True,
                   help="the source's URL, e.g. http://127.0.0.1:8470 or https://src.example:8470")
    p.add_argument("--mode", choices=MODES, required=True)
    options.add_hugepage_size(p, "1G")
    p.add_argument("--guest-socket", required=True, metavar="PATH")
    options.add_token_file(p)
    options.add_tls_server(p)
    p.add_argument("--tls-ca", metavar="FILE",
                   help="trust an https:// --source whose certificate this PEM CA signed (or "
                        "that certificate itself); default: the system's trusted CAs")
    p.add_argument("--background-delay", type=float, default=0.0, metavar="SECONDS",
                   help="start the background pull this long after a guest connects "
                        "(benchmarks use it to measure faults alone)")
    p.add_argument("--background-cap", type=parse_size, default=0, metavar="BYTES",
                   help="cap the background pull at this many bytes per second, e.g. 500MiB "
                        "(QEMU's max-postcopy-bandwidth; default 0: no cap)")
    p.add_argument("--background-window", type=int, default=BackgroundPolicy.window,
                   metavar="N", help="background requests (of --background-chunk each) in "
                   f"flight (default {BackgroundPolicy.window})")
    p.add_argument("--background-chunk", type=parse_size, default=BackgroundPolicy.chunk_bytes,
                   metavar="BYTES", help="granules claimed, fetched and installed together by "
                   f"the background pull (default {BackgroundPolicy.chunk_bytes >> 20}MiB; at "
                   "least one granule)")
    p.add_argument("--resume-deadline", type=float, default=60.0, metavar="SECONDS",
                   help="how long a broken connection to the source may take to come back "
                        "before the migration fails (vCPUs wait meanwhile)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..dest.daemon import DestDaemon, serve
    from ..dest.migration import SourceLink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = load_token(args.token_file)
    check_exposure(args.listen, token)
    server_ssl = server_context_from_args(args.tls_cert, args.tls_key)
    client_ssl = _client_context(args.source, args.tls_ca)
    source = SourceLink(args.source.rstrip("/"), token, client_ssl)
    daemon = DestDaemon(source, args.mode, args.hugepage_size, args.guest_socket,
                        policy=background_policy(args), resume_deadline=args.resume_deadline)
    serve(daemon, args.listen.host, args.listen.port, ssl_context=server_ssl)
    return 0


def background_policy(args) -> BackgroundPolicy:
    if args.background_window < 1:
        raise MigratorError(f"--background-window {args.background_window}: give at least 1")
    return BackgroundPolicy(delay=args.background_delay, chunk_bytes=args.background_chunk,
                            window=args.background_window, cap_bytes_per_s=args.background_cap)


def _client_context(source: str, ca: str | None):
    if not source.lower().startswith("https://"):
        if ca is not None:
            raise TLSFileError(f"--tls-ca {ca} is for an https:// --source; {source} is "
                               f"plain HTTP: write https://... or drop --tls-ca")
        return None
    return client_context(ca)
