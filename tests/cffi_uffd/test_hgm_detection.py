"""HGM detection: MADV_SPLIT is the probe; feature bit 13 is WP_UNPOPULATED, not HGM."""

from cffi_uffd import Feature, detect_hgm


def test_this_kernel_has_no_hgm_by_madv_split(huge_2m):
    result = detect_hgm(huge_2m)
    assert result.present is False, result
    assert "MADV_SPLIT" in result.method
    assert "EINVAL" in result.detail


def test_feature_bit_13_is_wp_unpopulated():
    assert Feature(1 << 13).name == "WP_UNPOPULATED"
    assert [f.name for f in Feature if "HGM" in f.name] == []
