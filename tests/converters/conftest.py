"""Shared fixtures for the converter tests: sample paths, OME schema validation, Bio-Formats."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest
import tifffile

from tests.helpers import ROOT

FETCH_SCRIPT = ROOT / "scripts" / "fetch-bioformats.sh"
OME_NS = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}


@pytest.fixture(scope="session")
def ome_schema():
    """The OME 2016-06 schema shipped inside ome-types: validation never goes to the network."""
    import ome_types
    import xmlschema

    xsd = Path(ome_types.__file__).parent / "ome-2016-06.xsd"
    assert xsd.is_file(), f"ome-types no longer ships {xsd.name}"
    return xmlschema.XMLSchema(xsd)


@pytest.fixture
def validate(ome_schema):
    """Validate the OME-XML of an OME-TIFF against the schema; return its parsed root."""
    def check(path: Path) -> ET.Element:
        with tifffile.TiffFile(path) as tif:
            assert tif.is_ome, f"{path.name} is not an OME-TIFF"
            xml = tif.pages.first.description
        ome_schema.validate(xml)
        return ET.fromstring(xml)
    return check


@dataclass
class BioFormatsImage:
    sizes: dict[str, int]
    pixel_type: str
    physical: dict[str, tuple[float, str]]
    date: str | None
    channels: list[str]
    resolutions: int
    microscope: str | None
    detectors: list[str]
    map_keys: int
    text: str


@pytest.fixture(scope="session")
def bioformats_jar() -> Path:
    """bioformats_package.jar, fetched by scripts/fetch-bioformats.sh; under CI a missing one fails."""
    java = shutil.which("java")
    cache = Path(os.environ.get("BIOFORMATS_CACHE", Path.home() / ".cache" / "upload-portal" / "bioformats"))
    jar = cache / "bioformats_package.jar"
    if java and not jar.is_file():
        subprocess.run(["sh", str(FETCH_SCRIPT), str(cache)], check=False, capture_output=True, timeout=600,
                       env={**os.environ, "PYTHON": os.environ.get("PYTHON", shutil.which("python3") or "python3")})
    if not java or not jar.is_file():
        why = "java is not installed" if not java else f"{jar} is missing (run scripts/fetch-bioformats.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"Bio-Formats check cannot run: {why}")
        pytest.skip(f"Bio-Formats check skipped: {why}")
    return jar


@pytest.fixture
def bioformats(bioformats_jar):
    """Read a file with Bio-Formats' ImageInfo (what OMERO imports with) and return what it saw."""
    def read(path: Path) -> BioFormatsImage:
        run = subprocess.run(
            ["java", "-cp", str(bioformats_jar), "loci.formats.tools.ImageInfo", "-nopix", "-no-upgrade", "-noflat",
             "-omexml", str(path)],
            capture_output=True, text=True, timeout=180,
        )
        assert run.returncode == 0, run.stderr[-2000:] + run.stdout[-2000:]
        text = run.stdout
        start, end = text.find("<?xml"), text.rfind("</OME>")
        assert start >= 0 and end > start, f"no OME-XML in ImageInfo output:\n{text[-2000:]}"
        root = ET.fromstring(text[start:end + len("</OME>")])
        image = root.find("ome:Image", OME_NS)
        pixels = image.find("ome:Pixels", OME_NS)
        info = text[:start]
        resolutions = re.search(r"Resolutions = (\d+)", info)
        scope = root.find("ome:Instrument/ome:Microscope", OME_NS)
        return BioFormatsImage(
            sizes={a: int(pixels.get(f"Size{a}")) for a in "TCZYX"},
            pixel_type=pixels.get("Type"),
            physical={a: (float(pixels.get(f"PhysicalSize{a}")), pixels.get(f"PhysicalSize{a}Unit", "µm"))
                      for a in "XYZ" if pixels.get(f"PhysicalSize{a}")},
            date=image.findtext("ome:AcquisitionDate", None, OME_NS),
            channels=[c.get("Name") for c in pixels.findall("ome:Channel", OME_NS)],
            resolutions=int(resolutions.group(1)) if resolutions else 1,
            microscope=scope.get("Model") if scope is not None else None,
            detectors=[d.get("Model") for d in root.findall("ome:Instrument/ome:Detector", OME_NS)],
            map_keys=len(root.findall(".//ome:MapAnnotation/ome:Value/ome:M", OME_NS)),
            text=info,
        )
    return read


@pytest.fixture
def check_output(validate, bioformats):
    """Validate a conversion's OME-TIFF and check that Bio-Formats sees what the Conversion says."""
    def check(conversion) -> BioFormatsImage:
        root = validate(conversion.output)
        seen = bioformats(conversion.output)
        assert seen.sizes == conversion.shape
        assert seen.channels == conversion.channels
        if conversion.pixel_size is None:
            assert "X" not in seen.physical
        else:
            assert seen.physical["X"][0] == pytest.approx(conversion.pixel_size.x, rel=1e-9)
            assert seen.physical["Y"][0] == pytest.approx(conversion.pixel_size.y, rel=1e-9)
            assert seen.physical["X"][1] == conversion.pixel_size.unit
        if conversion.acquired is None:
            assert seen.date is None
        else:
            utc = conversion.acquired.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
            assert seen.date is not None and seen.date.startswith(utc)
        assert seen.microscope == conversion.microscope
        # the original metadata travels as one MapAnnotation, the same key-values as Conversion.metadata
        annotation = root.find("ome:StructuredAnnotations/ome:MapAnnotation", OME_NS)
        assert annotation.get("Namespace") == "openmicroscopy.org/omero/client/mapAnnotation"
        pairs = {m.get("K"): (m.text or "") for m in annotation.findall("ome:Value/ome:M", OME_NS)}
        assert pairs == conversion.metadata
        assert seen.map_keys == len(conversion.metadata)
        return seen
    return check
