"""The source app's shared state, as typed aiohttp app keys."""

from aiohttp import web

from .image import GuestImage
from .inject import Corruption
from .served import Stats

IMAGE_KEY = web.AppKey("image", GuestImage)
MANIFEST_KEY = web.AppKey("manifest", bytes)  # the image's manifest, encoded once
STATS_KEY = web.AppKey("stats", Stats)
TOKEN_KEY = web.AppKey("token", str)  # absent: no auth
STREAMS_KEY = web.AppKey("streams", set)
CORRUPTION_KEY = web.AppKey("corruption", Corruption)  # absent: nothing injected  # the open streams' PageSenders, stopped at shutdown
