"""The source host: holds the guest image and serves it to destinations.

- image: GuestImage, the guest's memory (generated from a seed, or a file) and its manifest
- synthetic: the recipe of generated images
- server: the aiohttp app (create_app); streams: the upgraded page streams
- daemon: listening, event loop, signals (run); cli: `migrator source`
"""

from .daemon import Listen, run
from .image import GuestImage, regions_for
from .server import create_app

__all__ = ["GuestImage", "Listen", "create_app", "regions_for", "run"]
