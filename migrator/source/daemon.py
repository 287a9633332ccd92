"""Running the source: event loop choice, HTTPS or HTTP, signals (addresses: migrator.listen)."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections.abc import Callable

from aiohttp import web

from migrator.errors import MigratorError
from migrator.listen import Listen, check_exposure
from migrator.units import format_size

from .image import GuestImage
from .inject import Corruption
from .server import create_app

log = logging.getLogger("migrator.source")

LOOPS = ("auto", "uvloop", "asyncio")
# Measured on the 2-vCPU VM (blocking client, 5 rounds): idle 4 KiB urgent round trips are
# the same on both loops (p50 ~61 us); while a 1 GiB background reply streams, urgent round
# trips are ~2x faster on uvloop (p50 ~83 us vs ~155 us), which is what faults feel; asyncio
# streams the 1 GiB reply ~10 % faster (3.5 vs 3.2 GB/s). Faults matter more: uvloop.
AUTO_LOOP = "uvloop"
SHUTDOWN_TIMEOUT = 2.0  # seconds that in-flight /v1/pages downloads get at shutdown
# aiohttp closes a connection that has not sent a whole request head within this many seconds
# of connecting or of its last reply (slow-header clients, idle keep-alives); its default for
# an AppRunner is an hour. Upgraded page streams are not affected: their handler is running.
KEEPALIVE_TIMEOUT = 10.0


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "auto":
        name = AUTO_LOOP
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"unknown event loop {name!r}: use one of {', '.join(LOOPS)}")


def run(image: GuestImage, listen: Listen, token: str | None, loop: str = "auto",
        ready_seconds: float | None = None, access_log: bool = False,
        ssl_context: ssl.SSLContext | None = None, corruption: Corruption | None = None) -> int:
    """Serve image until SIGTERM or SIGINT; returns the exit status."""
    check_exposure(listen, token)
    factory = loop_factory(loop)
    loop_name = AUTO_LOOP if loop == "auto" else loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(image, listen, token, loop_name, ready_seconds, access_log,
                                 ssl_context, corruption))


async def _serve(image: GuestImage, listen: Listen, token: str | None, loop_name: str,
                 ready_seconds: float | None, access_log: bool,
                 ssl_context: ssl.SSLContext | None = None,
                 corruption: Corruption | None = None) -> int:
    started = time.monotonic()
    app = create_app(image, token, corruption)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           keepalive_timeout=KEEPALIVE_TIMEOUT,
                           access_log=logging.getLogger("aiohttp.access") if access_log else None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True,
                           ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as e:
            raise MigratorError(f"cannot listen on {listen.host}:{listen.port}: {e.strerror}") from e
        port = runner.addresses[0][1]
        stop = asyncio.Event()
        received: list[str] = []
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: (received.append(s.name), stop.set()))
        ready = (ready_seconds or 0) + time.monotonic() - started
        url = listen.url(port, tls=ssl_context is not None)
        log.info("source listening on %s: image %s from %s (id %s, ready in %.1f s), auth %s, "
                 "loop %s", url, format_size(image.size), image.origin,
                 image.image_id, ready, "on" if token else "off", loop_name)
        if corruption is not None:
            log.warning("injecting corruption: %g of pages wrong once at random, %d pages "
                        "always wrong", corruption.rate, len(corruption.pages))
        await stop.wait()
        log.info("source stopping on %s", received[0])
    finally:
        await runner.cleanup()
    return 0
