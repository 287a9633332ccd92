"""MADV_DONTNEED on a registered range: a REMOVE event, and EAGAIN from ioctls until it is read."""

import select
import threading

import pytest

from cffi_uffd import PAGE_SIZE, Feature, Mapping, MappingChanged, RegisterMode, Remove, dontneed

PAGES = 4


def test_dontneed_yields_remove_and_blocks_ioctls_until_read(new_uffd):
    uffd = new_uffd()
    uffd.api(Feature.EVENT_REMOVE)
    with Mapping.anonymous(PAGES * PAGE_SIZE) as m, Mapping.anonymous(PAGE_SIZE) as src:
        uffd.register(m.address, m.length, RegisterMode.MISSING)
        # madvise waits until the handler has read the REMOVE event, so it runs in a thread.
        advisor = threading.Thread(target=dontneed, args=(m.address, m.length), daemon=True)
        advisor.start()
        poller = select.poll()
        poller.register(uffd.fileno(), select.POLLIN)
        assert poller.poll(5000), "no event after MADV_DONTNEED"
        with pytest.raises(MappingChanged):
            uffd.copy(m.address, src.address, PAGE_SIZE)
        assert uffd.read_events(timeout=1.0) == [Remove(m.address, m.address + m.length)]
        advisor.join(5)
        assert not advisor.is_alive()
        assert uffd.copy(m.address, src.address, PAGE_SIZE) == PAGE_SIZE
