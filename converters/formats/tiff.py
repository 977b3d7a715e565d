"""Any other TIFF: every series of the file becomes an image, with what its writer says about it.

Asked after OME-TIFF and the Thermo Fisher/FEI and Zeiss SEM plugins. The writer's calibration,
date and instrument are read by converters.formats._tiff_meta; a TIFF whose writer we do not
recognise still imports, with warnings naming what is unknown. Pages are decoded segment by segment
(bounded memory). A series' extra axes become T, C and Z; RGB samples become channels; a thumbnail
or overview page beside the data becomes an image of its own; reduced-resolution levels of a pyramid
are accounted for (the OME-TIFF gets its own).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tifffile

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage
from converters.formats._tiff import TIFF_MAGIC, SegmentPlane, open_tiff
from converters.formats._tiff_meta import calibrated, describe
from converters.meta import pixel_size, to_metres

NAME = "TIFF"
EXTENSIONS = (".tif", ".tiff", ".btf")
PRIORITY = 90  # after every TIFF plugin that knows its vendor's tag
HELP = ("any other TIFF (ImageJ, DigitalMicrograph exports, JEOL SightX, TVIPS, Olympus SIS, Hamamatsu, Zeiss "
        "Atlas/Fibics, TESCAN, JEOL and Hitachi SEMs with their .txt): calibration, date and instrument where the "
        "file says; otherwise imported with what is unknown to check")
SIDECARS = ({"name": "{stem}.txt", "what": "JEOL or Hitachi SEM metadata file"},
            {"name": "{stem}.hdr", "what": "TESCAN metadata file"})
UNKNOWN_WRITER = "TIFF written by a program we do not recognise: only its standard tags were read"
_ROLES = {"T": "T", "C": "C", "Z": "Z", "S": "C"}  # tifffile axes; any other (I, Q, ...) counts as T
_SAMPLES = ("red", "green", "blue", "alpha")


def identify(head: bytes, path: Path) -> bool:
    return head[:4] in TIFF_MAGIC


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    path, cut_short = files[0], []
    with open_tiff(path, cut_short) as tif:
        try:
            series = [s for s in tif.series if s.keyframe is not None]
            found = describe(tif, files, options.timezone)
        except (IndexError, KeyError, tifffile.TiffFileError) as e:
            raise ConversionError(f"{path.name}: its TIFF structure is damaged ({type(e).__name__}: {e})") from None
        if not series:
            raise ConversionError(f"{path.name} is a TIFF without any image in it")
        images = [_image(path, s, i) for i, s in enumerate(series)]
        accounted = _levels(series)
        listed = sum(len(s.pages) for s in series)
        if listed < len(tif.pages):
            accounted.append(Accounted(f"{len(tif.pages) - listed} further pages", "not kept",
                                       "tifffile finds no image series in them (masks or thumbnails of the data)"))
    known, z_m, step = calibrated(found)
    primary = max(range(len(images)), key=lambda i: _pixels(images[i]))
    images.insert(0, images.pop(primary))
    for image in images:
        same_grid = (image.shape["Y"], image.shape["X"]) == (images[0].shape["Y"], images[0].shape["X"])
        size = known.pixel_size if same_grid else None  # a thumbnail's pixels are larger: unknown
        if size is not None and z_m:
            size = pixel_size(to_metres(size.x, size.unit), to_metres(size.y, size.unit), z_m)
        image.pixel_size, image.acquired, image.microscope = size, found.acquired, found.microscope
        image.detector, image.notes = found.detector, [*image.notes, *found.notes]
        image.metadata = {**found.metadata, **(known.metadata if same_grid else {})}
        image.time_increment = step if image.shape["T"] > 1 else None
        # the registry adds date, microscope and pixel size unknown
        image.warnings = [*([] if found.writer else [UNKNOWN_WRITER]), *found.warnings, *cut_short]
    stem = path.stem
    accounted += [Accounted(image.title, "image", stem if n == 0 else f"{stem} [{image.title}]")
                  for n, image in enumerate(images)]
    return SourceFile(images=images, accounted=accounted)


def _pixels(image: SourceImage) -> int:
    return math.prod(image.shape.values())


def _image(path: Path, series: tifffile.TiffPageSeries, index: int) -> SourceImage:
    """One series as an image: its leading axes mapped to T, C and Z, planes in OME order (Z fastest)."""
    keyframe = series.keyframe
    page_axes = keyframe.axes  # "YX", "YXS" (RGB) or "SYX" (planar)
    axes, shape = series.get_axes(False), series.get_shape(False)
    lead = [(a, n) for a, n in zip(axes, shape) if a not in page_axes and a not in "YX"]
    pages = list(series.pages)
    if math.prod(n for _, n in lead) != len(pages):  # a layout tifffile guessed from a description: trust the pages
        lead = [("T", len(pages))]
    roles = [_ROLES.get(a, "T") for a, _ in lead]
    order = np.arange(len(pages)).reshape([n for _, n in lead] or [1])
    by_role = [[i for i, r in enumerate(roles) if r == role] for role in "TCZ"]
    order = order.transpose([i for group in by_role for i in group] or [0])
    dims = [math.prod(lead[i][1] for i in group) for group in by_role]
    order = order.reshape(dims)
    samples = keyframe.samplesperpixel if keyframe.samplesperpixel > 1 and "S" in page_axes else 1
    ny, nx = keyframe.imagelength, keyframe.imagewidth
    planes_t, channels_c, planes_z = dims

    def planes():
        for t in range(planes_t):
            for c in range(channels_c):
                for s in range(samples):
                    for z in range(planes_z):
                        page = pages[order[t, c, z]]
                        if page is None:
                            raise ConversionError(f"{path.name}: page {order[t, c, z]} of series {index} is missing")
                        yield SegmentPlane(path, keyframe, page.dataoffsets, page.databytecounts, s)

    first = SegmentPlane(path, keyframe, keyframe.dataoffsets, keyframe.databytecounts)
    channels = _channels(keyframe, channels_c, samples)
    title = f"series {index + 1}" + (" (thumbnail)" if keyframe.is_reduced else "")  # the primary is named after the file
    notes = ["palette image: raw pixel indices kept, the display palette is not applied"] \
        if keyframe.photometric == tifffile.PHOTOMETRIC.PALETTE else []
    return SourceImage(shape={"T": planes_t, "C": channels_c * samples, "Z": planes_z, "Y": ny, "X": nx},
                       dtype=first.dtype, planes=planes, channels=channels, title=title, notes=notes)


def _channels(keyframe: tifffile.TiffPage, count: int, samples: int) -> list[str]:
    if samples > 1:
        names = _SAMPLES if keyframe.photometric == tifffile.PHOTOMETRIC.RGB else [f"sample {i}" for i in range(samples)]
        return [f"{name}" if count == 1 else f"C{c} {name}" for c in range(count) for name in names[:samples]]
    return ["intensity"] if count == 1 else [f"C{c}" for c in range(count)]


def _levels(series: list[tifffile.TiffPageSeries]) -> list[Accounted]:
    return [Accounted(f"series {i + 1} reduced level {level}", "not kept",
                      "a lower-resolution copy of the image: the OME-TIFF gets its own")
            for i, s in enumerate(series) for level in range(1, len(s.levels))]
