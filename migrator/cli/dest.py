"""`migrator dest`: the destination daemon."""

from __future__ import annotations

import logging

from ..auth import load_token
from ..dest.backing import MODES
from ..listen import check_exposure
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
    options.add_background_policy(p)
    p.add_argument("--resume-deadline", type=float, default=60.0, metavar="SECONDS",
                   help="how long a broken connection to the source may take to come back "
                        "before the migration fails (vCPUs wait meanwhile)")
    p.add_argument("--max-guests", type=options.count, default=64, metavar="N",
                   help="guests served at once (default 64); the one over gets an error "
                        "message and its connection closed")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..dest.daemon import DestDaemon, serve
    from ..dest.migration import SourceEndpoint

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = load_token(args.token_file)
    check_exposure(args.listen, token)
    server_ssl = server_context_from_args(args.tls_cert, args.tls_key)
    client_ssl = _client_context(args.source, args.tls_ca)
    source = SourceEndpoint(args.source.rstrip("/"), token, client_ssl)
    daemon = DestDaemon(source, args.mode, args.hugepage_size, args.guest_socket,
                        policy=options.background_policy(args), resume_deadline=args.resume_deadline,
                        max_guests=args.max_guests)
    serve(daemon, args.listen.host, args.listen.port, ssl_context=server_ssl)
    return 0


def _client_context(source: str, ca: str | None):
    if not source.lower().startswith("https://"):
        if ca is not None:
            raise TLSFileError(f"--tls-ca {ca} is for an https:// --source; {source} is "
                               f"plain HTTP: write https://... or drop --tls-ca")
        return None
    return client_context(ca)
