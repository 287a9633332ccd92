"""HGM detection: MADV_SPLIT is the probe; feature bit 13 is WP_UNPOPULATED, not HGM."""

from cffi_uffd import Feature, detect_hgm, hugepages, SIZE_2M


def test_this_kernel_has_no_hgm_by_madv_split():
    before = hugepages.pool(SIZE_2M).total
    result = detect_hgm()
    assert result.present is False, result
    assert "MADV_SPLIT" in result.method
    assert "EINVAL" in result.detail
    assert hugepages.pool(SIZE_2M).total == before  # the borrowed probe page went back


def test_feature_bit_13_is_wp_unpopulated():
    assert Feature(1 << 13).name == "WP_UNPOPULATED"
    assert [f.name for f in Feature if "HGM" in f.name] == []
