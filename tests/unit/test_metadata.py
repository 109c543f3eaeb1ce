"""metadata.txt must be complete for the official QGIS plugin repository."""

import configparser
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = [
    "name",
    "qgisMinimumVersion",
    "description",
    "about",
    "version",
    "author",
    "email",
    "repository",
    "tracker",
    "homepage",
    "tags",
    "category",
    "icon",
    "hasProcessingProvider",
    "changelog",
    "experimental",
    "license",
]


@pytest.fixture(scope="module")
def metadata():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are camelCase
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    return parser["general"]


def test_required_fields_present_and_filled(metadata):
    missing = [key for key in REQUIRED if not metadata.get(key, "").strip()]
    assert missing == []


def test_values(metadata):
    assert metadata["name"] == "LandFuse"
    assert metadata["qgisMinimumVersion"] == "3.22"
    assert metadata["category"] == "Raster"
    assert metadata["hasProcessingProvider"] == "yes"
    assert metadata["experimental"] in {"True", "False"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"])
    assert "@" in metadata["email"]
    for key in ("repository", "tracker", "homepage"):
        assert metadata[key].startswith("https://")
    assert len(metadata["about"]) > 200
    assert metadata["version"] in metadata["changelog"]


def test_icon_exists_and_is_a_png(metadata):
    icon = ROOT / metadata["icon"]
    assert icon.is_file()
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_version_matches_pyproject(metadata):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{metadata["version"]}"' in text
