"""The images one import makes of a file, as OMERO's importer makes them: one per series.

Bio-Formats turns every series of a file into an Image, all in the import's one Fileset: each scene of
a Zeiss CZI, each Image of a multi-series OME-TIFF. OMERO names them as omero-blitz's PixelsProcessor
does (ome/formats/model/PixelsProcessor.java): the name the import was given, and, when the file has
more than one series, " [<series name>]" after it, the series' index where the reader names none.
The embedded store and the tests' fake server both follow this, so tests see what a server does.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import tifffile

CZI_MAGIC = b"ZISRAWFILE"
OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


def series_names(path: Path) -> list[str | None]:
    """The file's series in Bio-Formats' order, each with the name its reader gives it (or None)."""
    with open(path, "rb") as f:
        head = f.read(len(CZI_MAGIC))
    if head.startswith(CZI_MAGIC):
        from converters.base import ConversionError
        from converters.formats.czi import scene_names  # the CZI reader's own XML locator

        try:
            return scene_names(Path(path))
        except (ConversionError, ET.ParseError):
            return [None]  # as for a TIFF below
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            with tifffile.TiffFile(path) as tif:
                xml = tif.ome_metadata
        except (tifffile.TiffFileError, OSError, ValueError):
            return [None]  # the importer would refuse what cannot be read; one image is the store's answer
        if xml:
            try:
                images = ET.fromstring(xml).findall(f"{OME}Image")
            except ET.ParseError:
                return [None]
            return [image.get("Name") or None for image in images] or [None]
    return [None]


def image_names(name: str, path: Path) -> list[str]:
    """The names of the images an import named `name` makes of this file (PixelsProcessor)."""
    series = series_names(path)
    if len(series) == 1:
        return [name]
    return [f"{name} [{series_name if series_name is not None else index}]" for index, series_name in enumerate(series)]
