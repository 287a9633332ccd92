"""MISSING faults on anonymous memory, resolved with COPY and ZEROPAGE."""

from cffi_uffd import PAGE_SIZE, Feature, Mapping, PageFault, RegisterMode

PAGES = 4


def test_copy_installs_the_source_bytes(new_uffd, resolver, toucher):
    uffd = new_uffd()
    uffd.api(Feature.THREAD_ID)
    payload = b"\xab" * PAGE_SIZE
    with Mapping.anonymous(PAGES * PAGE_SIZE) as m, Mapping.anonymous(PAGE_SIZE) as src:
        src.view[:] = payload
        uffd.register(m.address, m.length, RegisterMode.MISSING)

        def copy(fault: PageFault) -> None:
            assert uffd.copy(fault.address, src.address, PAGE_SIZE) == PAGE_SIZE

        addresses = [m.address + i * PAGE_SIZE for i in range(PAGES)]
        with resolver(uffd, copy) as r:
            t = toucher(addresses).start_and_finish()
        assert sorted(f.address for f in r.faults()) == addresses
        assert t.checksum == PAGES * int.from_bytes(payload[:8], "little") % 2**64
        assert bytes(m.view) == payload * PAGES


def test_zeropage_resolves_a_read_with_zeros(new_uffd, resolver, toucher):
    uffd = new_uffd()
    uffd.api()
    with Mapping.anonymous(PAGE_SIZE) as m:
        uffd.register(m.address, m.length, RegisterMode.MISSING)
        with resolver(uffd, lambda f: uffd.zeropage(f.address, PAGE_SIZE)) as r:
            t = toucher([m.address + 64]).start_and_finish()
        assert len(r.faults()) == 1 and not r.faults()[0].write
        assert t.checksum == 0


def test_write_fault_is_flagged_as_a_write(new_uffd, resolver, toucher):
    uffd = new_uffd()
    uffd.api()
    with Mapping.anonymous(PAGE_SIZE) as m:
        uffd.register(m.address, m.length, RegisterMode.MISSING)
        with resolver(uffd, lambda f: uffd.zeropage(f.address, PAGE_SIZE)) as r:
            toucher([m.address], writes=b"\x01", values=[42]).start_and_finish()
        assert [(f.write, f.minor, f.wp) for f in r.faults()] == [(True, False, False)]
        assert int.from_bytes(m.view[:8], "little") == 42
