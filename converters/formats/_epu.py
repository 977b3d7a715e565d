"""Read an ATLAS/EPU `MicroscopeImage` XML (a .NET DataContract serialisation) into flat metadata."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from converters.base import ConversionError, PixelSize
from converters.limits import parse_xml
from converters.meta import clean, fresh_key, localize, pixel_size

MAX_XML_BYTES = 32 * 2**20
# .NET escapes "<PrefixExponent>k__BackingField" as "_x003C_PrefixExponent_x003E_k__BackingField"
_BACKING = re.compile(r"^_x003C_(.+)_x003E_k__BackingField$")
_FRACTION = re.compile(r"(\.\d{6})\d+")  # .NET writes 7 fractional digits; Python takes 6


@dataclass
class EpuImage:
    acquired: datetime | None = None
    microscope: str | None = None
    detector: str | None = None
    pixel_size: PixelSize | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def is_epu(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith((b"<MicroscopeImage", b"<?xml")) and b"<MicroscopeImage" in head[:4096]


def read_xml(path: Path, zone: tzinfo) -> EpuImage:
    if path.stat().st_size > MAX_XML_BYTES:
        raise ConversionError(f"{path.name} is too large for a MicroscopeImage XML ({path.stat().st_size} bytes)")
    try:
        root = parse_xml(path.read_bytes(), path.name)
    except ET.ParseError as e:
        raise ConversionError(f"{path.name} is not valid XML ({e})") from None
    if _local(root.tag) != "MicroscopeImage":
        raise ConversionError(f"{path.name} is not an ATLAS/EPU MicroscopeImage XML (its root is <{_local(root.tag)}>)")
    metadata: dict[str, str] = {}
    _flatten(root, "", metadata, {})
    image = EpuImage(metadata=metadata)

    stamp = _find(root, "microscopeData/acquisition/acquisitionDateTime")
    if stamp:
        try:
            image.acquired = datetime.fromisoformat(_FRACTION.sub(r"\1", stamp.replace("Z", "+00:00")))
        except ValueError:
            raise ConversionError(f"{path.name}: acquisition date {stamp!r} is not an ISO date") from None
        # a DataContract date without offset is the acquiring PC's wall clock: the facility's zone
        image.acquired = localize(image.acquired, zone)
    image.microscope = _find(root, "microscopeData/instrument/InstrumentModel") or None
    camera = _find(root, "microscopeData/acquisition/camera/Name")
    scanning = _find(root, "microscopeData/acquisition/scanningDetector/Name")
    image.detector = camera or scanning or None
    x = _number(_find(root, "SpatialScale/pixelSize/x/numericValue"))
    y = _number(_find(root, "SpatialScale/pixelSize/y/numericValue"))
    image.pixel_size = pixel_size(x, y)  # numericValue is in metres (unit symbol "m")
    return image


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, path: str) -> str:
    node = root
    for part in path.split("/"):
        node = next((c for c in node if _local(c.tag) == part), None)
        if node is None:
            return ""
    return clean(node.text or "")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _flatten(node: ET.Element, prefix: str, out: dict[str, str], seen: dict[str, int]) -> None:
    children = list(node)
    if not children:
        if prefix:
            out[prefix] = clean(node.text or "")
        return
    for child in children:
        tag = _local(child.tag)
        if tag == "KeyValueOfstringanyType":  # a .NET dictionary entry: use its Key as the name
            key = next((clean(c.text or "") for c in child if _local(c.tag) == "Key"), "")
            value = next((c for c in child if _local(c.tag) == "Value"), None)
            if value is not None:
                _flatten(value, f"{prefix}.{key}" if prefix else key, out, seen)
            continue
        match = _BACKING.match(tag)
        tag = match.group(1) if match else tag.lstrip("_")
        _flatten(child, fresh_key(f"{prefix}.{tag}" if prefix else tag, out, seen), out, seen)
