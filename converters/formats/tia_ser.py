"""A TIA .ser file given on its own: refused, since its date and microscope live in the .emi."""
from __future__ import annotations

import re
from pathlib import Path

from converters.base import ConversionError, ConvertOptions
from converters.formats._ser import SER_MAGIC

NAME = "TIA SER"
EXTENSIONS = (".ser",)


def identify(head: bytes, path: Path) -> bool:
    return head.startswith(SER_MAGIC)


def read(files: list[Path], options: ConvertOptions):
    match = re.match(r"^(?P<stem>.+)_\d+$", files[0].stem)
    emi = f"{match['stem'] if match else files[0].stem}.emi"
    raise ConversionError(f"{files[0].name} needs its {emi} in the same upload: the .emi holds the metadata")
