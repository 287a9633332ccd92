"""`migrator source`: serve a guest image to destinations."""

from __future__ import annotations

import argparse
import logging
import time

from migrator.auth import load_token
from migrator.listen import Listen, check_exposure
from migrator.tls import TLSFileError, server_context_from_args
from migrator.protocol.poison import parse_pages, sample_pages
from migrator.units import parse_size

from .daemon import LOOPS, run
from .image import GuestImage

DEFAULT_MEMORY = "4GiB"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "source", help="serve a guest memory image to destinations",
        description="Serve a guest memory image (deterministic from a seed, or a file) over "
                    "HTTP: manifest, page reads and the urgent and background page streams.")
    p.add_argument("--listen", default="127.0.0.1:8470", type=_listen, metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8470; port 0 picks a free one; "
                        "beyond loopback a token is required)")
    p.add_argument("--memory", type=_size, default=None, metavar="SIZE",
                   help=f"guest memory size, a multiple of 2 MiB (default {DEFAULT_MEMORY}; "
                        f"with --image, must match the file if given)")
    p.add_argument("--seed", type=int, default=42, help="seed of the generated image (default 42)")
    p.add_argument("--image", metavar="FILE",
                   help="serve this file's bytes instead of a generated image")
    p.add_argument("--token-file", metavar="FILE",
                   help="file holding the bearer token (default: $MIGRATOR_TOKEN, else no auth)")
    poison = p.add_mutually_exclusive_group()
    poison.add_argument("--poison", type=float, metavar="RATE", default=0.0,
                        help="mark this fraction of 4 KiB pages as poisoned (memory errors), "
                             "chosen deterministically from --seed, e.g. 0.0001")
    poison.add_argument("--poison-pages", metavar="LIST",
                        help="mark these 4 KiB pages as poisoned, e.g. 12,4096-4100")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve HTTPS with this PEM certificate (chain); needs --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    p.add_argument("--loop", choices=LOOPS, default="auto",
                   help="event loop (default auto: the faster one measured here, uvloop)")
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    p.set_defaults(func=main)


def _listen(text: str) -> Listen:
    try:
        return Listen.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = load_token(args.token_file)
    check_exposure(args.listen, token)  # before spending seconds on the image
    try:
        ssl_context = server_context_from_args(args.tls_cert, args.tls_key)
    except TLSFileError as e:
        raise SystemExit(f"migrator source: {e}") from None
    started = time.monotonic()
    try:
        if args.image:
            image = GuestImage.from_file(args.image)
            if args.memory is not None and args.memory != image.size:
                raise SystemExit(f"--memory {args.memory} does not match the {image.size} bytes "
                                 f"of --image {args.image}: drop --memory or fix it")
        else:
            image = GuestImage.generate(args.memory or parse_size(DEFAULT_MEMORY), args.seed)
        image.poison(parse_pages(args.poison_pages, image.pages) if args.poison_pages
                     else sample_pages(args.poison, image.pages, args.seed))
    except (ValueError, OSError) as e:
        raise SystemExit(f"migrator source: {e}") from e
    return run(image, args.listen, token, loop=args.loop,
               ready_seconds=time.monotonic() - started, access_log=args.access_log,
               ssl_context=ssl_context)
