"""OME-TIFF is imported as it is; its microscope, date and channels come from its OME-XML."""
from __future__ import annotations

import math
import struct
from datetime import UTC
from pathlib import Path
from xml.etree import ElementTree

import tifffile
from ome_types import from_xml

from converters.base import ConversionError, ConvertOptions, Passthrough, PixelSize
from converters.formats._tiff import TIFF_MAGIC
from converters.limits import parse_xml, refuse_inflated
from converters.meta import clean

NAME = "OME-TIFF"
EXTENSIONS = (".tif", ".tiff", ".btf")  # the suffixes group_files accepts
HELP = "imported as it is; microscope, date and channels from its OME-XML"
PRIORITY = 5  # before the SEM plugins: an OME-TIFF that kept its SEM tags is still an OME-TIFF


def identify(head: bytes, path: Path) -> bool:
    if head[:4] not in TIFF_MAGIC:
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.is_ome
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, struct.error):  # struct: a header cut short
        return False


def read(files: list[Path], options: ConvertOptions) -> Passthrough:
    path = files[0]
    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
            _refuse_bomb(path, tif)
        parse_xml(xml, path.name, "OME-XML")  # bounded before ome-types builds its model
        ome = from_xml(xml, validate=False)
    except (tifffile.TiffFileError, ValueError, OSError, ElementTree.ParseError) as e:  # pydantic's ValidationError is a ValueError
        raise ConversionError(f"{path.name}: the OME-XML of this OME-TIFF cannot be read ({e})") from None
    if not ome.images:
        raise ConversionError(f"{path.name}: the OME-XML describes no image")
    image = ome.images[0]
    pixels = image.pixels
    instrument = next((i for i in ome.instruments if image.instrument_ref and i.id == image.instrument_ref.id),
                      ome.instruments[0] if ome.instruments else None)
    microscope = detector = None
    if instrument is not None:
        if instrument.microscope is not None:
            microscope = instrument.microscope.model or instrument.microscope.manufacturer
        detector = ", ".join(d.model for d in instrument.detectors if d.model) or None
    acquired = image.acquisition_date
    if acquired is not None and acquired.tzinfo is None:
        acquired = acquired.replace(tzinfo=UTC)  # xsd:dateTime without offset: OME means UTC
    size = None
    if pixels.physical_size_x and pixels.physical_size_y:
        size = PixelSize(pixels.physical_size_x, pixels.physical_size_y, pixels.physical_size_x_unit.value,
                         pixels.physical_size_z)
    metadata = {}
    for annotation in ome.structured_annotations.map_annotations:
        for m in annotation.value.ms:
            metadata[clean(m.k or "")] = clean(m.value)
    notes = [f"{len(ome.images)} images in this file; the first is described here"] if len(ome.images) > 1 else []
    return Passthrough(
        shape={a: getattr(pixels, f"size_{a.lower()}") for a in "TCZYX"},
        channels=[c.name or f"C{i}" for i, c in enumerate(pixels.channels)], pixel_size=size,
        acquired=acquired, microscope=microscope, detector=detector, metadata=metadata, notes=notes,
    )


def _refuse_bomb(path: Path, tif: tifffile.TiffFile) -> None:
    """Judge the pixels by the TIFF pages Bio-Formats reads, not only by the OME-XML, which may say less.

    Each page takes a dozen bytes of file at the least, so walking them is bounded by the file's size."""
    declared = 0
    for page in tif.pages:
        declared += math.prod(page.shape) * (page.dtype.itemsize if page.dtype is not None else 1)
    refuse_inflated(path.name, declared, path.stat().st_size)
