"""Find the plugin that reads a file group, by content, and run it.

A plugin is any module in `converters.formats` with:
  NAME: str                       shown to researchers ("Velox EMD")
  EXTENSIONS: tuple[str, ...]      the lower-case suffixes its files carry (".emd")
  PRIORITY: int (optional)         lower is asked first, for formats that refine another (OME-TIFF)
  READERS: tuple[str, ...] (optional)  modules it imports only when reading (RosettaSciIO's): warm_up
  identify(head: bytes, path) -> bool   decides from the content only (head = first 64 KiB)
  read(files, options) -> SourceImage | SourceFile | Passthrough
  HELP, PARTNERS, SIDECARS: its help line and the files that go with it (see converters.declared,
                            which reads NAME, EXTENSIONS, PRIORITY and these as literals, unimported)
Dropping a module in that package is all it takes to add a format. A SourceFile's images become one
OME-TIFF each (the primary `<stem>.ome.tiff`, the others `<stem> [<title>].ome.tiff`), its spectra a
CSV and a PNG plot each; a file with spectra and no image gets the first spectrum's plot as its image.
"""
from __future__ import annotations

import importlib
import logging
import math
import pkgutil
import re
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from types import ModuleType
from xml.etree import ElementTree

from converters import declared, formats, ometiff, spectra
from converters.base import (
    Accounted, Conversion, ConversionError, ConvertOptions, OutputImage, Passthrough, SourceFile, SourceImage,
)
from converters.limits import refuse_inflated
from converters.meta import DATE_UNKNOWN, MICROSCOPE_UNKNOWN, PIXEL_SIZE_UNKNOWN, friendly_name

log = logging.getLogger(__name__)
HEAD_BYTES = 65536
# The warnings a researcher reads when the file does not say (exact words, the UI and tests rely on them).
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


def warm_up() -> None:
    """Import every plugin and the readers they import only when used (RosettaSciIO pulls in dask
    and pint: about 1.2 s), so a worker's first conversion does not wait for them."""
    for plugin in plugins():
        for name in getattr(plugin, "READERS", ()):
            importlib.import_module(name)


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
    expected = " or ".join(dict.fromkeys(p.NAME for p in plugins() if ext in p.EXTENSIONS))
    if not expected:
        raise ConversionError(f"{path.name} is not in a format we read: its content {_describe(head)} "
                              f"(the portal reads {_readable()})")
    raise ConversionError(
        f"{path.name} is not a valid {expected} file: its content {_describe(head)}; "
        f"it may be damaged, incomplete, or not what its name says"
    )


def _readable() -> str:
    """The formats read and their suffixes, from the plugins' declarations."""
    return "; ".join(f"{f.name} {'/'.join(f.extensions)}" for f in declared.readers())


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
            return _passthrough(files, result, microscope)
        source = result if isinstance(result, SourceFile) else SourceFile([result])
        try:
            return _write(files, source, Path(out_dir), options)
        finally:
            for image in source.images:
                if image.close is not None:
                    image.close()
    except ConversionError:
        raise
    except MemoryError:
        raise ConversionError(f"{files[0].name}: its header asks for more memory than any real image needs") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error, EOFError, UnicodeError,
            OverflowError, RuntimeError, ElementTree.ParseError) as e:
        # plugins turn what they expect into specific messages; this is the net under them
        log.warning("unexpected %s while converting %s", type(e).__name__, files[0], exc_info=True)
        raise ConversionError(f"{files[0].name} could not be read: {type(e).__name__}: {e}") from None


def _write(files: list[Path], source: SourceFile, out_dir: Path, options: ConvertOptions) -> Conversion:
    """Write every image of the source to its own OME-TIFF and every spectrum as CSV and plot."""
    stem = _stem(files[0])
    images, accounted = list(source.images), list(source.accounted)
    if not images and not source.spectra:
        raise ConversionError(f"{files[0].name} holds neither an image nor a spectrum")
    plotted = not images
    if plotted:  # OMERO needs an image to hang the spectra on: the first spectrum's plot
        images = [replace(spectra.plot_image(source.spectra[0]), acquired=source.acquired,
                          microscope=source.microscope, metadata=dict(source.metadata))]
        accounted.append(Accounted(f"spectrum {source.spectra[0].title}", "image",
                                   f"{stem}: a plot of the spectrum, as the file holds no image"))
    for image in images:
        _refuse_bomb(files, image)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = unique_names([image.title for image in images[1:]])
    paths = [out_dir / f"{stem}.ome.tiff"] + [out_dir / f"{stem} [{_safe(name)}].ome.tiff" for name in names]
    attachments = []
    for spectrum, name in zip(source.spectra, unique_names([s.title for s in source.spectra])):
        attachments += spectra.write(spectrum, out_dir / f"{stem} [{_safe(name)} spectrum]")
    weights = [math.prod(image.shape.values()) * image.dtype.itemsize for image in images]
    done, total = 0, sum(weights) or 1
    outputs = []
    for image, path, weight, name in zip(images, paths, weights, [None, *names]):
        microscope = friendly_name(image.microscope, options.microscope_names)
        ometiff.write(image, path, _scaled(options, done / total, weight / total), microscope)
        done += weight
        if options.progress is not None:
            options.progress(done / total)
        outputs.append(OutputImage(path, name, dict(image.shape), list(image.channels), image.pixel_size))
    if not source.accounted and not plotted:  # a plugin that reads one image: its channels are all there is
        accounted[:0] = [Accounted(f"channel {c}", "channel", f"{stem}: {c}") for c in images[0].channels]
    primary = images[0]
    return Conversion(
        inputs=files, output=paths[0], status="converted",
        microscope=friendly_name(primary.microscope, options.microscope_names), acquired=primary.acquired,
        pixel_size=primary.pixel_size, channels=list(primary.channels), shape=dict(primary.shape),
        metadata=dict(primary.metadata), notes=list(dict.fromkeys(n for image in images for n in image.notes)),
        detector=primary.detector, images=outputs, attachments=attachments, accounted=accounted,
        warnings=_warnings(images, [None, *names], plotted),
    )


def _passthrough(files: list[Path], result: Passthrough, microscope: str | None) -> Conversion:
    return Conversion(
        inputs=files, output=files[0], status="passthrough", microscope=microscope, acquired=result.acquired,
        pixel_size=result.pixel_size, channels=list(result.channels), shape=dict(result.shape),
        metadata=dict(result.metadata), notes=list(result.notes), detector=result.detector,
        images=[OutputImage(files[0], None, dict(result.shape), list(result.channels), result.pixel_size)],
        accounted=[Accounted(f"channel {c}", "channel", f"{files[0].name}: {c}") for c in result.channels],
        warnings=_warnings([result], [None]),
    )


def _warnings(images: Sequence[SourceImage | Passthrough], names: list[str | None], plotted: bool = False) -> list[str]:
    """What a researcher must check, per image beyond the first: "pixel size unknown (HAADF)".

    A calibration kept as key-values ("Calibration X" = "0.01 1/nm", reciprocal space) is known, not
    unknown; a spectrum's plot (plotted) has no pixel size to know.
    """
    found = []
    for image, name in zip(images, names):
        own = list(getattr(image, "warnings", []))
        if image.acquired is None:
            own.append(DATE_UNKNOWN)
        if image.microscope is None:
            own.append(MICROSCOPE_UNKNOWN)
        if image.pixel_size is None and "Calibration X" not in image.metadata and not plotted:
            own.append(PIXEL_SIZE_UNKNOWN)
        found += own if name is None else [f"{w} ({name})" for w in own if w not in found]
    return list(dict.fromkeys(found))


def _scaled(options: ConvertOptions, start: float, share: float) -> ConvertOptions:
    """Options whose progress callback maps one image's 0..1 onto its share of the whole conversion."""
    if options.progress is None:
        return options
    report = options.progress
    return replace(options, progress=lambda fraction: report(start + share * fraction))


def unique_names(names: list[str | None]) -> list[str]:
    """Names made distinct for file names, titles and channels: the second "EDS" becomes "EDS (2)"."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        name = name or "image"
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _safe(title: str) -> str:
    """A title as a file-name part that every file system takes (Windows forbids <>:"/\\|?*)."""
    return re.sub(r'[<>:"/\\|?*\x00-\x1f]+', "_", title).strip(" .") or "image"


def _refuse_bomb(files: list[Path], result: SourceImage | Passthrough) -> None:
    """Refuse an image whose pixels would be far more than the whole file group could hold."""
    itemsize = result.dtype.itemsize if isinstance(result, SourceImage) else 1  # pass-through: a lower bound
    refuse_inflated(files[0].name, math.prod(result.shape.values()) * itemsize,
                    sum(path.stat().st_size for path in files))


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".ome.tiff")] if name.lower().endswith(".ome.tiff") else path.stem


_HDF5 = b"\x89HDF\r\n\x1a\n"
_SIGNATURES = [
    (_HDF5, "is an HDF5 file"), (b"II*\x00", "is a TIFF file"), (b"MM\x00*", "is a TIFF file"),
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

