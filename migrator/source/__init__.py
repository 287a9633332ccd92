"""The source host: holds the guest image and serves it to destinations.

- image: GuestImage, the guest's memory (generated from a seed, or a file) and its manifest
- synthetic: the recipe of generated images
- server: the aiohttp app (create_app); streams: the upgraded page streams
- daemon: listening, event loop, signals (run); its command line is migrator/cli/source.py
"""

from .image import GuestImage, regions_for

__all__ = ["GuestImage", "regions_for"]
