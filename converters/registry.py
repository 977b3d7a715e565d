"""Find the plugin that reads a file group, by content, and run it.

A plugin is any module in `converters.formats` with:
  NAME: str                       shown to researchers ("Velox EMD")
  EXTENSIONS: tuple[str, ...]      the lower-case suffixes its files carry (".emd")
  PRIORITY: int (optional)         lower is asked first, for formats that refine another (OME-TIFF)
  identify(head: bytes, path) -> bool   decides from the content only (head = first 64 KiB)
  read(files, options) -> SourceImage | Passthrough
Dropping a module in that package is all it takes to add a format.
"""
from __future__ import annotations

import importlib
import logging
import math
import pkgutil
import struct
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from xml.etree import ElementTree

from converters import formats, ometiff
from converters.base import Conversion, ConversionError, ConvertOptions, OutputImage, Passthrough, SourceImage
from converters.meta import friendly_name, human_size

log = logging.getLogger(__name__)
HEAD_BYTES = 65536


@cache
def plugins() -> tuple[ModuleType, ...]:
    """Every format module in converters.formats, in the order they are asked."""
    found = []
    for info in pkgutil.iter_modules(formats.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{formats.__name__}.{info.name}")
        if callable(getattr(module, "identify", None)) and callable(getattr(module, "read", None)):
            found.append(module)
    return tuple(sorted(found, key=lambda m: (getattr(m, "PRIORITY", 50), m.__name__)))


def identify(path: Path) -> ModuleType:
    """The plugin for this file's content; a ConversionError when the content or the name is wrong."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    ext = path.suffix.lower()
    for plugin in plugins():
        if plugin.identify(head, path):
            if ext not in plugin.EXTENSIONS:
                raise ConversionError(
                    f"{path.name} is named {ext or 'without an extension'} but its content is a {plugin.NAME} "
                    f"file; rename it to {plugin.EXTENSIONS[0]} if that is what it is"
                )
            return plugin
    expected = [p.NAME for p in plugins() if ext in p.EXTENSIONS]
    if not expected:
        raise ConversionError(f"{path.name} is not in a format we read: its content {_describe(head)}")
    raise ConversionError(
        f"{path.name} is not a valid {' or '.join(dict.fromkeys(expected))} file: its content {_describe(head)}; "
        f"it may be damaged, incomplete, or not what its name says"
    )


def convert(files: Sequence[Path], out_dir: Path, options: ConvertOptions = ConvertOptions()) -> Conversion:
    """Convert one file group (primary file first) into out_dir, or pass it through."""
    files = [Path(f) for f in files]
    if not files:
        raise ConversionError("no file to convert")
    for path in files:
        if not path.is_file():
            raise ConversionError(f"{path.name} is missing")
        if path.stat().st_size == 0:
            raise ConversionError(f"{path.name} is empty (0 bytes)")
    try:
        plugin = identify(files[0])
        result = plugin.read(files, options)
        microscope = friendly_name(result.microscope, options.microscope_names)
        if isinstance(result, Passthrough):
            _refuse_bomb(files, result)
            return _conversion(files, files[0], "passthrough", result, microscope)
        output = Path(out_dir) / f"{_stem(files[0])}.ome.tiff"
        try:
            _refuse_bomb(files, result)
            output.parent.mkdir(parents=True, exist_ok=True)
            ometiff.write(result, output, options, microscope)
        finally:
            if result.close is not None:
                result.close()
        return _conversion(files, output, "converted", result, microscope)
    except ConversionError:
        raise
    except MemoryError:
        raise ConversionError(f"{files[0].name}: its header asks for more memory than any real image needs") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error, EOFError, UnicodeError,
            OverflowError, RuntimeError, ElementTree.ParseError) as e:
        # plugins turn what they expect into specific messages; this is the net under them
        log.warning("unexpected %s while converting %s", type(e).__name__, files[0], exc_info=True)
        raise ConversionError(f"{files[0].name} could not be read: {type(e).__name__}: {e}") from None


# Microscope images compress a few times at most; pixels a thousand times the file's size are a
# decompression bomb (or sparse HDF5 with no data), which would fill the disk or OMERO with nothing.
MAX_INFLATION = 1000
BOMB_FLOOR = 64 * 2**20  # below this, any ratio is harmless


def _refuse_bomb(files: list[Path], result: SourceImage | Passthrough) -> None:
    itemsize = result.dtype.itemsize if isinstance(result, SourceImage) else 1  # pass-through: a lower bound
    declared = math.prod(result.shape.values()) * itemsize
    stored = sum(path.stat().st_size for path in files)
    if declared > BOMB_FLOOR and declared > MAX_INFLATION * stored:
        raise ConversionError(
            f"{files[0].name} declares {human_size(declared)} of pixels in {human_size(stored)} of file: refused as a "
            f"decompression bomb (real images are never {declared // stored:,} times smaller than their pixels)")


def _conversion(files, output, status, result: SourceImage | Passthrough, microscope) -> Conversion:
    return Conversion(
        inputs=files, output=output, status=status, microscope=microscope, acquired=result.acquired,
        pixel_size=result.pixel_size, channels=list(result.channels), shape=dict(result.shape),
        metadata=dict(result.metadata), notes=list(result.notes), detector=result.detector,
        images=[OutputImage(output, None, dict(result.shape), list(result.channels), result.pixel_size)],
    )


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".ome.tiff")] if name.lower().endswith(".ome.tiff") else path.stem


_SIGNATURES = [
    (b"\x89HDF\r\n\x1a\n", "is an HDF5 file"), (b"II*\x00", "is a TIFF file"), (b"MM\x00*", "is a TIFF file"),
    (b"II+\x00", "is a BigTIFF file"), (b"MM\x00+", "is a BigTIFF file"), (b"ZISRAWFILE", "is a CZI file"),
    (b"PK\x03\x04", "is a ZIP archive"), (b"\x89PNG", "is a PNG image"), (b"\xff\xd8\xff", "is a JPEG image"),
    (b"%PDF", "is a PDF document"), (b"<?xml", "is an XML document"),
]


def _describe(head: bytes) -> str:
    for magic, text in _SIGNATURES:
        if head.startswith(magic):
            return text
    if not head.strip(b"\x00"):
        return "is all zero bytes"
    return f"starts with the bytes {head[:8].hex(' ')}, which match no format we read"

