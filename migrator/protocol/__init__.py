"""The wire protocol between source and destination: pure data, no sockets.

- manifest: the guest image's regions and a digest per 4 KiB page (msgpack)
- digest: how a page's digest is computed
- frames: length-prefixed page requests and replies on the upgraded page streams
- handshake: the HTTP/1.1 Upgrade that turns a connection into a page stream
"""

API_VERSION = 1
PREFIX = f"/v{API_VERSION}"
PAGE_SIZE = 4096  # the granularity of digests, zero pages and HGM faults
