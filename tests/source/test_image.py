"""GuestImage: deterministic synthetic content with a realistic mix, files, regions, manifest."""

from __future__ import annotations

from collections import Counter

import pytest

from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import ZERO_DIGEST, digests
from migrator.protocol.manifest import DATA, ZERO, Manifest
from migrator.source import GuestImage, regions_for

MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return GuestImage.generate(256 * MiB, 42)


def test_same_seed_gives_the_same_bytes_and_digests(image):
    with GuestImage.generate(256 * MiB, 42) as again:
        assert again.digests == image.digests
        assert again.kinds == image.kinds
        assert again.image_id == image.image_id
        assert again.view == image.view


def test_content_is_a_function_of_seed_and_position_only(image):
    # Every page is made from the seed and its own position, never from how the image was cut
    # up or how big it is: a smaller image of the same seed is an exact prefix.
    with GuestImage.generate(30 * MiB, 42) as small:
        assert small.view == image.view[:30 * MiB]
        assert small.digests == image.digests[:small.pages]


def test_different_seed_gives_different_pages(image):
    with GuestImage.generate(256 * MiB, 43) as other:
        assert other.image_id != image.image_id
        data_pages = [i for i, k in enumerate(image.kinds) if k == DATA and other.kinds[i] == DATA]
        same = sum(image.digests[i] == other.digests[i] for i in data_pages)
        assert same < len(data_pages) // 10


def test_digests_and_kinds_describe_every_page(image):
    assert digests(image.view) == image.digests
    for i, kind in enumerate(image.kinds):
        is_zero = image.digests[i] == ZERO_DIGEST
        assert (kind == ZERO) == is_zero, f"page {i}"


def test_mix_has_zero_repeated_and_unique_pages_in_runs(image):
    pages = image.pages
    counts = Counter(image.digests)
    zero = counts[ZERO_DIGEST]
    repeated = sum(n for d, n in counts.items() if n > 1 and d != ZERO_DIGEST)
    unique = sum(1 for n in counts.values() if n == 1)
    assert 0.22 <= zero / pages <= 0.33
    assert 0.12 <= repeated / pages <= 0.23
    assert 0.45 <= unique / pages <= 0.65
    assert zero + repeated + unique == pages
    # Zero pages come in clusters, like free memory, not scattered one by one.
    zero_runs = sum(1 for i in range(pages)
                    if image.kinds[i] == ZERO and (i == 0 or image.kinds[i - 1] != ZERO))
    assert zero / zero_runs > 16


def test_regions_split_like_a_pc():
    assert [(r.name, r.offset, r.size) for r in regions_for(4 * GiB)] == [
        ("ram-below-4g", 0, 3 * GiB), ("ram-above-4g", 3 * GiB, GiB)]
    assert [(r.name, r.size) for r in regions_for(2 * GiB)] == [("ram-below-4g", 2 * GiB)]
    assert [r.size for r in regions_for(3 * GiB + 2 * MiB)] == [3 * GiB, 2 * MiB]


@pytest.mark.parametrize("size", [0, 3 * MiB, 2 * MiB + PAGE_SIZE])
def test_size_not_a_multiple_of_2mib_is_refused(size):
    with pytest.raises(ValueError, match="multiple of 2 MiB"):
        GuestImage.generate(size, 1)


def test_manifest_round_trips_through_msgpack(image):
    m = image.manifest
    back = Manifest.decode(m.encode())
    assert (back.image_id, back.regions, back.size) == (m.image_id, m.regions, image.size)
    assert back.digests == m.digests and back.kinds == m.kinds
    assert back.count(ZERO) == image.kinds.count(ZERO)


def test_from_file_serves_the_file_bytes(tmp_path, image):
    path = tmp_path / "guest.img"
    path.write_bytes(image.view[:32 * MiB])
    with GuestImage.from_file(path) as loaded:
        assert loaded.size == 32 * MiB
        assert loaded.digests == image.digests[:loaded.pages]
        assert loaded.kinds == image.kinds[:loaded.pages]
        assert loaded.image_id.startswith("file:")
        assert str(path) in loaded.origin
        assert loaded.view.readonly


def test_from_file_of_a_wrong_size_says_so(tmp_path):
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(3 * MiB))
    with pytest.raises(ValueError, match=r"odd\.img.*multiple of 2 MiB"):
        GuestImage.from_file(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(OSError, match="nope.img"):
        GuestImage.from_file(tmp_path / "nope.img")
