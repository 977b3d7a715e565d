"""Bruker Esprit: EDS maps (.bcf: SEM images and a spectrum image) and single spectra (.spx).

RosettaSciIO (rsciio.bruker) is the reader of record: images, axes, energy calibration, the
header's date and the original metadata. A .bcf's images become images (those of the first one's
shape its channels, others images of their own); each spectrum image is summed into one spectrum,
attached as CSV and plot, while the full map stays in the original file, which the pipeline keeps.

The sum is made by rsciio's own unpacker (the one behind bruker.file_reader), told to fold the whole
map into one pixel in uint32: it streams the map block by block, so memory is one spectrum whatever
the map's size. (file_reader's own downsampling would pick the type from the header's sum spectrum
and can choose uint8, which wraps.)
"""
from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage
from converters.formats._eds import check_text_size, local_time, read_signals, spectrum, spectrum_file
from converters.meta import calibration, flatten
from converters.planes import FuncPlane
from converters.registry import unique_names

NAME = "Bruker Esprit"
EXTENSIONS = (".bcf", ".spx")
READERS = ("rsciio.bruker",)
HELP = "EDS maps and spectra: the map's images become images, its sum spectrum a CSV and plot; a spectrum alone imports its plot"
BCF_MAGIC = b"AAMVHFSS"  # Bruker's SFS container
MIN_BCF_BYTES = 0x14C  # the SFS header, to its count of chunks
SFS_CHUNKS_AT = 0x118
SUM_TITLE = "EDS (sum of the spectrum image)"


def identify(head: bytes, path: Path) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(BCF_MAGIC) or (text.startswith(b"<?xml") and b"<TRTSpectrum" in head[:1024])


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    path = files[0]
    if path.suffix.lower() == ".spx":
        check_text_size(path, "Bruker .spx")
        try:
            signal = read_signals("bruker", path, "Bruker .spx")[0]
        except ElementTree.ParseError as e:
            raise _xml_damage(path, e) from None
        return spectrum_file(path, signal, "EDS", local_time(signal["metadata"]["General"], options.timezone),
                             lambda om: om.get("Detector", {}).get("Type"))
    _refuse_truncated(path)
    try:
        return _bcf(path, options)
    except zlib.error as e:  # rsciio inflates the container's blocks as it reads them
        raise ConversionError(f"{path.name}: a compressed block in it does not inflate ({e}); the file is "
                              f"damaged") from None


def _xml_damage(path: Path, error: ElementTree.ParseError) -> ConversionError:
    if not path.read_bytes().rstrip().endswith(b"</TRTSpectrum>"):
        return ConversionError(f"{path.name} is truncated: its XML ends before </TRTSpectrum> (the file holds "
                               f"{path.stat().st_size} bytes)")
    return ConversionError(f"{path.name} is not valid XML ({error})")


def _refuse_truncated(path: Path) -> None:
    """Refuse a .bcf shorter than its SFS container says: from byte 0x118 (where rsciio's SFS_reader
    seeks them) it holds chunks of the size at byte 0x128, as many as the count at byte 0x148."""
    size = path.stat().st_size
    if size < MIN_BCF_BYTES:
        raise ConversionError(f"{path.name} is truncated: a Bruker .bcf holds at least its {MIN_BCF_BYTES}-byte "
                              f"container header, the file has {size} bytes")
    with open(path, "rb") as f:
        head = f.read(MIN_BCF_BYTES)
    chunk_size, = struct.unpack_from("<I", head, 0x128)
    chunks, = struct.unpack_from("<I", head, 0x148)
    declared = SFS_CHUNKS_AT + chunks * chunk_size
    if size < declared:
        raise ConversionError(f"{path.name} is truncated: its header says {declared} bytes, the file holds {size} "
                              f"(an interrupted copy?)")


def _bcf(path: Path, options: ConvertOptions) -> SourceFile:
    images = read_signals("bruker", path, "Bruker .bcf", select_type="image")
    maps = read_signals("bruker", path, "Bruker .bcf", select_type="spectrum_image", index="all", lazy=True)
    acquired = local_time(maps[0]["metadata"]["General"], options.timezone)
    spectra, accounted = [], []
    for n, signal in enumerate(maps):
        title = SUM_TITLE if len(maps) == 1 else f"{SUM_TITLE} {n + 1}"
        spectra.append(spectrum(signal, title, f"spectrum image {n + 1}", _map_sum(path, n, signal)))
        accounted.append(Accounted(f"spectrum image {signal['metadata']['General'].get('title') or n + 1}",
                                   "attachment", f"summed into {title}; the full map stays in the original file"))
    eds = {f"EDS.{k}": v for k, v in flatten({k: v for k, v in maps[0]["original_metadata"].items()
                                              if k != "Line counter"}).items()}
    found, image_accounts = _images(path, images, acquired, eds)
    source = SourceFile(found, spectra, image_accounts + accounted, acquired=acquired, metadata=eds)
    return source


def _images(path: Path, signals: list[dict], acquired, eds: dict[str, str]):
    if not signals:
        return [], []
    names = unique_names([s["metadata"]["General"].get("title") or "image" for s in signals])
    shape = Counter(s["data"].shape for s in signals).most_common(1)[0][0]
    groups = [[(n, s) for n, s in zip(names, signals) if s["data"].shape == shape]]
    groups += [[(n, s)] for n, s in zip(names, signals) if s["data"].shape != shape]
    images, accounted = [], []
    for i, group in enumerate(groups):
        title = None if i == 0 else group[0][0]
        images.append(_image(group, title, acquired, eds if i == 0 else {}))
        accounted += [Accounted(f"image {n}", "channel" if i == 0 else "image", title or f"{path.stem}: {n}")
                      for n, _ in group]
    return images, accounted


def _image(group: list[tuple[str, dict]], title: str | None, acquired, eds: dict[str, str]) -> SourceImage:
    first = group[0][1]
    ny, nx = first["data"].shape
    dtype = np.result_type(*(s["data"].dtype for _, s in group))
    y, x = first["axes"][-2], first["axes"][-1]
    found = calibration((float(x["scale"]), x.get("units")), (float(y["scale"]), y.get("units")))
    planes = [FuncPlane((ny, nx), dtype, lambda y0, y1, d=s["data"]: d[y0:y1]) for _, s in group]
    return SourceImage(
        shape={"T": 1, "C": len(group), "Z": 1, "Y": ny, "X": nx}, dtype=dtype, planes=lambda: iter(planes),
        channels=[n for n, _ in group], pixel_size=found.pixel_size, acquired=acquired, microscope=None,
        detector=eds.get("EDS.Detector.Type"), metadata=found.metadata | flatten(first["original_metadata"]) | eds,
        title=title,
    )


def _map_sum(path: Path, index: int, signal: dict) -> np.ndarray:
    """The sum spectrum of spectrum image `index`, in one pass over the map (see the module's note)."""
    from rsciio.bruker import _api

    height, width, channels = (int(a["size"]) for a in signal["axes"])
    try:
        bcf = _api.BCF_reader(str(path))
        stream = bcf.get_file(f"EDSDatabase/SpectrumData{bcf.available_indexes[index]}")
        if _api.fast_unbcf:
            total = _api.unbcf_fast.parse_to_numpy(stream, (1, 1, channels), np.uint32, max(height, width))
        else:
            total = _api.py_parse_hypermap(stream, (1, 1, channels), np.int64, max(height, width))
    except (ValueError, KeyError, IndexError, EOFError, OSError, StopIteration) as e:
        raise ConversionError(f"{path.name}: its spectrum image cannot be unpacked ({type(e).__name__}: {e}); the "
                              f"file may be damaged or incomplete") from None
    return total.reshape(-1).astype(np.int64)
