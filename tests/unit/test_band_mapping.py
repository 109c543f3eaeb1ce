"""Band names from files are matched to the model's named bands."""

import pytest

from landfuse.core.band_mapping import normalise_band_name, suggest_band_mapping

pytestmark = pytest.mark.unit

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B2", "B02"),
        ("b02", "B02"),
        ("S2_B8A", "B8A"),
        ("B08A", "B8A"),
        ("Band 8A", "B8A"),
        ("band 4", "B04"),
        ("vv", "VV"),
        ("S1_VH", "VH"),
        ("red", "B04"),
        ("elevation", "DEM"),
        ("Sentinel-2 B12", "B12"),
        ("", ""),
        ("  DEM ", "DEM"),
        ("B10", "B10"),
    ],
)
def test_normalise(text, expected):
    assert normalise_band_name(text) == expected


def test_by_description_in_another_order():
    descriptions = list(reversed(S2))
    mapping = suggest_band_mapping(descriptions, S2)
    assert mapping.by_description and mapping.complete
    assert mapping.raster_bands == tuple(range(13, 0, -1))
    assert mapping.problem(13) == ""


def test_without_descriptions_equal_counts_take_file_order():
    mapping = suggest_band_mapping(["", ""], ["VV", "VH"])
    assert mapping.raster_bands == (1, 2) and not mapping.by_description


def test_missing_band_is_named():
    mapping = suggest_band_mapping(["B02", "B03", "B04"], ["B02", "B03", "B04", "B08"])
    assert not mapping.complete
    assert mapping.missing == ("B08",)
    assert "B08" in mapping.problem(3) and "3 band(s)" in mapping.problem(3)


def test_wrong_band_count_without_names_is_incomplete():
    mapping = suggest_band_mapping(["", "", ""], ["VV", "VH"])
    assert mapping.missing == ("VV", "VH")


def test_repeated_band_is_a_problem():
    from landfuse.core.band_mapping import BandMapping

    mapping = BandMapping(("VV", "VH"), (1, 1), False)
    assert "used for several" in mapping.problem(2)
