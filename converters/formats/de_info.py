"""A Direct Electron `<prefix>_info.txt` given without its MRC images: refused, the pixels are in them."""
from __future__ import annotations

from pathlib import Path

from converters.base import ConversionError, ConvertOptions
from converters.formats._de import SUFFIX, is_info

NAME = "Direct Electron info"
EXTENSIONS = (".txt",)


def identify(head: bytes, path: Path) -> bool:
    return is_info(head)


def read(files: list[Path], options: ConvertOptions):
    name = files[0].name
    prefix = name[: -len(SUFFIX)] if name.lower().endswith(SUFFIX) else files[0].stem
    raise ConversionError(f"{name} is a Direct Electron info file: it needs its images ({prefix}_movie.mrc or "
                          f"another {prefix}_*.mrc) in the same upload")
