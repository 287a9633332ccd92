"""Access patterns and the vCPUs' plans: deterministic from the seed, so every mode replays the
same accesses; writes land in each vCPU's own slot, so the last value written is known."""

from collections import Counter

import pytest

from migrator.guest import patterns, vcpu
from migrator.protocol import PAGE_SIZE

PAGES = 4096


@pytest.mark.parametrize("pattern", patterns.PATTERNS)
def test_every_pattern_is_the_same_for_the_same_seed_and_stays_in_memory(pattern):
    first = patterns.pages_for(pattern, PAGES, 1, 4, 2000, seed=9)
    assert first == patterns.pages_for(pattern, PAGES, 1, 4, 2000, seed=9)
    assert first != patterns.pages_for(pattern, PAGES, 1, 4, 2000, seed=10) or pattern == "sequential"
    assert len(first) == 2000 and all(0 <= p < PAGES for p in first)


def test_sequential_vcpus_walk_their_own_stripes():
    stripes = [set(patterns.pages_for("sequential", PAGES, v, 4, 2000, 1)) for v in range(4)]
    assert all(not (a & b) for i, a in enumerate(stripes) for b in stripes[i + 1:])


def test_zipf_and_hotset_touch_a_few_pages_most_of_the_time():
    for pattern in ("zipf", "hotset"):
        counts = Counter(patterns.pages_for(pattern, PAGES, 0, 1, 20000, 3))
        top = sum(n for _, n in counts.most_common(PAGES // 10))
        assert top / 20000 > 0.6, pattern


def test_an_unknown_pattern_names_the_known_ones():
    with pytest.raises(ValueError, match="sequential, uniform, zipf, hotset"):
        patterns.pages_for("spiral", PAGES, 0, 1, 10, 1)


def test_the_write_ratio_is_about_what_was_asked():
    writes = patterns.writes_for(0, 10000, 0.2, seed=5)
    assert set(writes) <= {0, 1} and 0.17 < sum(writes) / 10000 < 0.23


def test_plans_write_to_each_vcpus_own_slot_and_know_the_last_value_written():
    base = 1 << 40
    runs = vcpu.plan(base, PAGES, 3, "uniform", 500, 0.5, seed=2)
    assert [r.vcpu for r in runs] == [0, 1, 2]
    for r in runs:
        for address, written in zip(r.addresses, r.writes):
            assert base <= address < base + PAGES * PAGE_SIZE and address % 8 == 0
            if written:
                assert (address - base) % PAGE_SIZE == 8 * r.vcpu
    expected = vcpu.expected_writes(runs)
    last = {}
    for r in runs:
        for i, w in enumerate(r.writes):
            if w:
                last[r.addresses[i]] = r.values[i]
    assert expected == last and len(set(expected.values())) == len(expected)
