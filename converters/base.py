"""The contract between the job pipeline and the format plugins.

The pipeline calls `converters.convert(files, out_dir, options)` and gets a `Conversion` back, or a
`ConversionError` whose message is shown to the researcher as it is.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np


class ConversionError(Exception):
    """A file group cannot be converted; str(error) is a message a researcher can act on."""


@dataclass(frozen=True)
class PixelSize:
    x: float
    y: float
    unit: str  # an OME-XML length unit: "µm" is U+00B5 (converters.meta picks pm, nm, µm, mm or m)
    z: float | None = None


@dataclass(frozen=True)
class ConvertOptions:
    timezone: ZoneInfo = ZoneInfo("UTC")  # the facility's zone, for sources that store local time
    microscope_names: Mapping[str, str] = field(default_factory=dict)  # raw instrument -> friendly
    compression: str = "zstd"  # any lossless tifffile codec Bio-Formats reads: "zstd", "zlib", "lzw", "none"
    compression_level: int | None = None  # None: the codec's fast default
    tile: int = 512  # tile edge in pixels (multiple of 16); one-byte pixels get tiles twice as wide
    pyramid_above: int = 2048  # images wider or taller than this get reduced levels (SubIFDs)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # threads compressing tiles: every core
    progress: Callable[[float], None] | None = None  # told the fraction done (0..1) as planes are written


@dataclass(frozen=True)
class OutputImage:
    """One image file a conversion made (or passed through); each becomes one OMERO image."""

    path: Path
    title: str | None  # the signal's name ("HAADF"); None for the primary image, named after the file
    shape: dict[str, int]  # {"T", "C", "Z", "Y", "X"}
    channels: list[str]
    pixel_size: PixelSize | None


@dataclass(frozen=True)
class Attachment:
    """A file written beside the images that OMERO keeps as an attachment of the job's images."""

    path: Path
    kind: str  # "spectrum-csv" | "spectrum-plot"
    title: str  # what it holds, as a researcher reads it ("EDS spectrum")


@dataclass(frozen=True)
class Accounted:
    """Where one dataset of the source went, so that nothing in a file is left without a place."""

    source: str  # the dataset as a researcher reads it ("image HAADF", "spectrum image EDS"); no UUIDs
    went: str  # "image" | "channel" | "attachment" | "metadata" | "not kept"
    where: str  # the image or channel or attachment name, or why it could not be kept


@dataclass
class Conversion:
    inputs: list[Path]
    output: Path  # the file to import: the OME-TIFF written, or the input itself when passed through
    status: str  # "converted" | "passthrough"
    microscope: str | None  # friendly name; None when the file does not say
    acquired: datetime | None  # timezone-aware; None when the file does not say
    pixel_size: PixelSize | None
    channels: list[str]
    shape: dict[str, int]  # {"T", "C", "Z", "Y", "X"}
    metadata: dict[str, str]  # the original metadata as flat key-values
    notes: list[str] = field(default_factory=list)  # what was left out, told to the researcher
    detector: str | None = None  # detector names, comma-separated when several
    # Every image made, primary first (images[0].path == output); files to attach beside them; where
    # each dataset of the source went; and what a researcher must check ("acquisition date unknown").
    images: list[OutputImage] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    accounted: list[Accounted] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Plane(Protocol):
    """One 2-D image plane that is read in row bands, so a plane never has to fit in memory."""

    shape: tuple[int, int]  # (Y, X)
    dtype: np.dtype  # native byte order

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Return rows y0..y1 (exclusive) as a C-contiguous array of shape (y1 - y0, X)."""


@dataclass
class SourceImage:
    """What a format plugin reads: planes yielded on demand, and the metadata that goes with them.

    `planes()` yields the T*C*Z planes with Z varying fastest, then C, then T (OME order XYZCT).
    """

    shape: dict[str, int]  # {"T", "C", "Z", "Y", "X"}
    dtype: np.dtype
    planes: Callable[[], Iterator[Plane]]
    channels: list[str]
    pixel_size: PixelSize | None = None
    acquired: datetime | None = None  # timezone-aware
    microscope: str | None = None  # raw instrument name, mapped to a friendly one by the registry
    detector: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    time_increment: float | None = None  # seconds between T planes, when the file says
    channel_detectors: list[str] = field(default_factory=list)  # detector of each channel, when known
    close: Callable[[], None] | None = None  # releases what planes() reads from (an open HDF5 file)
    title: str | None = None  # the signal's name, for an image beyond the first ("<file> [<title>]")
    warnings: list[str] = field(default_factory=list)  # what could not be read and must be checked


@dataclass
class Spectrum:
    """A 1-D spectrum (or a spectrum image's sum spectrum), kept as a CSV and a PNG plot."""

    title: str  # "EDS", "EELS (sum of the spectrum image)"
    counts: np.ndarray  # 1-D
    offset: float  # energy of channel 0, in unit
    scale: float  # energy per channel, in unit
    unit: str  # "eV", "keV"; "" when the file gives no calibration
    source: str  # the dataset it came from, as a researcher reads it


@dataclass
class SourceFile:
    """What a plugin reads from a file group that holds more than one image, or spectra."""

    images: list[SourceImage]  # primary first; each becomes its own OME-TIFF and OMERO image
    spectra: list[Spectrum] = field(default_factory=list)
    accounted: list[Accounted] = field(default_factory=list)
    # for a file with spectra and no image: what the image made of the first spectrum's plot carries
    acquired: datetime | None = None
    microscope: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Passthrough:
    """What a plugin for a format OMERO imports as it is (OME-TIFF, CZI) reads from it."""

    shape: dict[str, int]
    channels: list[str]
    pixel_size: PixelSize | None = None
    acquired: datetime | None = None
    microscope: str | None = None
    detector: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
