"""A small picture of an image for the embedded store, as OMERO's ThumbnailStore gives one for a real
server: the first plane of the smallest pyramid level, scaled down and stretched between its 0.5 and
99.5 percentiles (as OMERO's default rendering window stretches to the image's range), as a PNG.

Memory: the converters write a pyramid for every image above a few thousand pixels a side, so its
smallest level is small; an OME-TIFF passed through without a pyramid is read one plane whole.
"""
from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import tifffile


class NoThumbnail(Exception):
    """The file holds no plane a thumbnail can be made of (not a TIFF, or no pixels)."""


def png_thumbnail(path: Path, longest_side: int) -> bytes:
    try:
        with tifffile.TiffFile(path) as tif:
            level = tif.series[0].levels[-1]  # the smallest: the whole image in the fewest bytes
            page = level.pages[0]
            plane = page.asarray()
    except (tifffile.TiffFileError, IndexError, ValueError) as e:
        raise NoThumbnail(f"{path.name} has no plane to make a thumbnail of ({e})") from None
    rgb = plane.ndim == 3 and plane.shape[-1] in (3, 4) and page.photometric == tifffile.PHOTOMETRIC.RGB
    plane = plane[..., :3] if rgb else plane.reshape(plane.shape[-2:])  # samples last; first of any other axis
    height, width = plane.shape[:2]
    scale = longest_side / max(height, width)  # a tiny image is enlarged, as OMERO's thumbnails are
    rows, columns = (np.linspace(0, n - 1, max(1, round(n * scale))).round().astype(int) for n in (height, width))
    small = plane[np.ix_(rows, columns)].astype(np.float64)  # nearest pixels: the thumbnail's exact size
    if np.iscomplexobj(small):
        small = np.abs(small)
    finite = small[np.isfinite(small)]
    low, high = np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 0.0)
    scaled = np.clip((np.nan_to_num(small, nan=low) - low) / ((high - low) or 1.0), 0, 1)
    return imagecodecs.png_encode(np.ascontiguousarray((scaled * 255).round().astype(np.uint8)))
