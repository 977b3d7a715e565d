"""An ATLAS/EPU MicroscopeImage XML given without its MRC: refused, since the pixels are in the MRC."""
from __future__ import annotations

from pathlib import Path

from converters.base import ConversionError, ConvertOptions
from converters.formats._epu import is_epu

NAME = "ATLAS/EPU XML"
EXTENSIONS = (".xml",)


def identify(head: bytes, path: Path) -> bool:
    return is_epu(head)


def read(files: list[Path], options: ConvertOptions):
    raise ConversionError(f"{files[0].name} needs its image {files[0].stem}.mrc in the same upload")
