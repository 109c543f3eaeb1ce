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


S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12")  # fmt: skip
OSCD = "Onera Satellite Change Detection dataset - Images/rennes/imgs_1"


def _band_files(names, descriptions=None):
    from landfuse.core.band_mapping import FileBands
    from landfuse.models.sensors import get_sensor

    s2 = get_sensor("sentinel2_l1c")
    return [
        FileBands(name, (descriptions[i] if descriptions else "",), sensor=s2)
        for i, name in enumerate(names)
    ]


def test_band_files_in_a_shell_s_order_are_put_in_the_model_s_by_their_names():
    """``*_B*.tif`` sorts B8A last: the file names, not the order, say which band each is."""
    from landfuse.core.band_mapping import MATCHED_BY_FILE_NAME, resolve_bands

    names = sorted(f"T30UWU_20160706_{b}.tif" for b in S2_BANDS)
    assert names[-1].endswith("B8A.tif")
    resolved = resolve_bands(_band_files(names), S2_BANDS)
    assert resolved.how == MATCHED_BY_FILE_NAME
    assert [names[file] for file, _ in resolved.choices] == [
        f"T30UWU_20160706_{b}.tif" for b in S2_BANDS
    ]
    # Descriptions and file names together: one file described, the other named.
    mixed = resolve_bands(_band_files(["x.tif", "y_B02.tif"], ["B03", ""]), ("B02", "B03"))
    assert mixed.choices == ((1, 1), (0, 1)) and mixed.how == MATCHED_BY_FILE_NAME


def test_two_files_for_one_band_and_a_missing_band_file_are_named():
    from landfuse.core.band_mapping import resolve_bands
    from landfuse.core.errors import BandMismatchError

    names = [f"T_{b}.tif" for b in S2_BANDS]
    with pytest.raises(BandMismatchError, match=r"B04: T_B04.tif band 1, copy_B04.tif band 1"):
        resolve_bands(_band_files([*names, "copy_B04.tif"]), S2_BANDS)
    with pytest.raises(BandMismatchError, match=r"no band is described as B8A"):
        resolve_bands(_band_files([n for n in names if "B8A" not in n]), S2_BANDS)


@pytest.mark.realdata
def test_the_rennes_band_files_as_delivered(realdata):
    """OSCD's 13 single-band files per date, without descriptions, listed as a shell does."""
    from landfuse.core.band_mapping import MATCHED_BY_FILE_NAME, FileBands, resolve_bands
    from landfuse.core.raster import inspect_raster
    from landfuse.models.sensors import get_sensor

    files = sorted((realdata / "oscd" / OSCD).glob("*.tif"))
    assert len(files) == 13
    infos = [inspect_raster(str(f)) for f in files]
    s2 = get_sensor("sentinel2_l1c")
    resolved = resolve_bands(
        [FileBands(i.path, i.descriptions, sensor=s2) for i in infos], S2_BANDS
    )
    assert resolved.how == MATCHED_BY_FILE_NAME
    chosen = [files[f].name.rsplit("_", 1)[-1] for f, _ in resolved.choices]
    assert chosen == [f"{b}.tif" for b in S2_BANDS]
