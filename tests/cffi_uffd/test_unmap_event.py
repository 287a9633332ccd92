"""munmap of a registered range yields an UNMAP event (Feature.EVENT_UNMAP)."""

import threading

from cffi_uffd import PAGE_SIZE, Feature, Mapping, RegisterMode, Unmap


def test_munmap_yields_unmap(new_uffd):
    uffd = new_uffd()
    uffd.api(Feature.EVENT_UNMAP)
    m = Mapping.anonymous(4 * PAGE_SIZE)
    start, end = m.address, m.address + m.length
    uffd.register(m.address, m.length, RegisterMode.MISSING)
    # munmap returns only after the event has been read, so it runs in a thread.
    closer = threading.Thread(target=m.close, daemon=True)
    closer.start()
    assert uffd.read_events(timeout=5.0) == [Unmap(start, end)]
    closer.join(5)
    assert not closer.is_alive()
