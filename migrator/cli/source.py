"""`migrator source`: serve a guest image to destinations."""

from __future__ import annotations

import argparse
import logging
import time

from ..auth import load_token
from ..errors import MigratorError
from ..listen import check_exposure
from ..protocol.poison import parse_pages, sample_pages
from ..source.daemon import LOOPS, run
from ..source.image import GuestImage
from ..source.inject import Corruption
from ..tls import server_context_from_args
from ..units import parse_size
from . import options

DEFAULT_MEMORY = "4GiB"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "source", help="serve a guest memory image to destinations",
        description="Serve a guest memory image (deterministic from a seed, or a file) over "
                    "HTTP: manifest, page reads and the urgent and background page streams.")
    options.add_listen(p, 8470, "the source's HTTP server")
    p.add_argument("--memory", type=options.size, default=None, metavar="SIZE",
                   help=f"guest memory size, a multiple of 2 MiB (default {DEFAULT_MEMORY}; "
                        f"with --image, must match the file if given)")
    p.add_argument("--seed", type=int, default=42, help="seed of the generated image (default 42)")
    p.add_argument("--image", metavar="FILE",
                   help="serve this file's bytes instead of a generated image")
    options.add_token_file(p)
    options.add_poison(p, "of the image, chosen deterministically from --seed")
    options.add_corruption(p)
    options.add_tls_server(p)
    p.add_argument("--loop", choices=LOOPS, default="auto",
                   help="event loop (default auto: the faster one measured here, uvloop)")
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = load_token(args.token_file)
    check_exposure(args.listen, token)  # before spending seconds on the image
    ssl_context = server_context_from_args(args.tls_cert, args.tls_key)
    started = time.monotonic()
    try:
        if args.image:
            image = GuestImage.from_file(args.image)
            if args.memory is not None and args.memory != image.size:
                raise MigratorError(f"--memory {args.memory} does not match the {image.size} "
                                    f"bytes of --image {args.image}: drop --memory or fix it")
        else:
            image = GuestImage.generate(args.memory or parse_size(DEFAULT_MEMORY), args.seed)
        image.poison(parse_pages(args.poison_pages, image.pages) if args.poison_pages
                     else sample_pages(args.poison, image.pages, args.seed))
        corruption = Corruption.parse(args.inject_corruption, args.inject_corruption_pages,
                                      image.pages)
    except (ValueError, OSError) as e:
        raise MigratorError(str(e)) from e
    return run(image, args.listen, token, loop=args.loop,
               ready_seconds=time.monotonic() - started, access_log=args.access_log,
               ssl_context=ssl_context, corruption=corruption)
