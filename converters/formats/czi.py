"""Zeiss CZI is imported as it is (Bio-Formats reads it); microscope and date come from its XML.

The metadata segment is found from the file header: "ZISRAWFILE" segment, MetadataPosition at
byte 92; there a "ZISRAWMETADATA" segment whose XML starts 256 bytes into its data.
"""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from converters.base import ConversionError, ConvertOptions, Passthrough
from converters.limits import parse_xml
from converters.meta import clean, flatten, fresh_key, pixel_size

NAME = "Zeiss CZI"
EXTENSIONS = (".czi",)
HELP = "Zeiss ZEN: imported as it is (OMERO reads it); microscope and date from its XML"
MAGIC = b"ZISRAWFILE"
MAX_XML_BYTES = 64 * 2**20


def identify(head: bytes, path: Path) -> bool:
    return head.startswith(MAGIC)


def read(files: list[Path], options: ConvertOptions) -> Passthrough:
    path = files[0]
    _refuse_truncated(path)
    try:
        root = parse_xml(_metadata_xml(path), path.name, "CZI metadata XML")
    except ET.ParseError as e:
        raise ConversionError(f"{path.name}: the CZI metadata XML is damaged ({e})") from None
    image = root.find("Metadata/Information/Image")
    if image is None:
        raise ConversionError(f"{path.name}: the CZI metadata has no Information/Image section")
    shape = {axis: _int(image.findtext(f"Size{axis}"), 1) for axis in "TCZYX"}
    channels = [clean(c.get("Name") or c.findtext("Name") or f"C{i}")
                for i, c in enumerate(image.findall("Dimensions/Channels/Channel"))]
    acquired = None
    stamp = clean(image.findtext("AcquisitionDateAndTime") or "")
    if stamp:
        try:
            acquired = datetime.fromisoformat(stamp[:26].rstrip("Z") + ("+00:00" if stamp.endswith("Z") else ""))
        except ValueError:
            acquired = None
        if acquired is not None and acquired.tzinfo is None:
            acquired = acquired.replace(tzinfo=UTC)  # ZEN writes UTC
    instrument = root.find("Metadata/Information/Instrument")
    microscope = detector = None
    if instrument is not None:
        scope = instrument.find("Microscopes/Microscope")
        if scope is not None:
            microscope = clean(scope.findtext("System") or scope.get("Name") or "") or None
        names = [clean(d.get("Name") or d.findtext("Model") or "") for d in instrument.findall("Detectors/Detector")]
        detector = ", ".join(n for n in names if n) or None
    information = root.find("Metadata/Information")
    scale = {d.get("Id"): _float(d.findtext("Value")) for d in root.findall("Metadata/Scaling/Items/Distance")}
    return Passthrough(
        shape=shape, channels=channels or [f"C{i}" for i in range(shape["C"])],
        pixel_size=pixel_size(scale.get("X"), scale.get("Y"), scale.get("Z")),  # CZI scaling is in metres
        acquired=acquired, microscope=microscope, detector=detector,
        metadata=flatten(_tree(information if information is not None else root)),
    )


def scene_names(path: Path) -> list[str | None]:
    """The file's scenes (Information/Image/SizeS), each with its Name where the XML gives one; a
    file without scenes is one. Bio-Formats makes one image per scene, in this order."""
    root = ET.fromstring(_metadata_xml(path))
    image = root.find("Metadata/Information/Image")
    count = _int(image.findtext("SizeS") if image is not None else None, 1)
    scenes = root.findall("Metadata/Information/Image/Dimensions/S/Scenes/Scene")
    names = {int(s.get("Index")) if (s.get("Index") or "").isdigit() else i: clean(s.get("Name") or "") or None
             for i, s in enumerate(scenes)}
    return [names.get(i) for i in range(count)]


def _refuse_truncated(path: Path) -> None:
    """Refuse a CZI that ends before its last segment does: the image block furthest into the file (the
    subblock directory, from DirectoryPosition at byte 84, gives each one's FilePosition), and the
    attachment directory (its position at byte 104). Each segment is a 32-byte header (its Id, then
    AllocatedSize and UsedSize) and its data. Passed through, a cut CZI would fail in OMERO, or import
    with tiles missing."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(112)
        if len(head) < 112:
            raise ConversionError(f"{path.name} is truncated inside its CZI file header")
        directory, = struct.unpack_from("<q", head, 84)
        attachments, = struct.unpack_from("<q", head, 104)
        ends = [_segment_end(f, path, attachments, size, b"ZISRAWATTDIR")] if attachments else []
        if directory:
            furthest = _furthest_block(f, path, directory, size)
            if furthest:
                ends.append(_segment_end(f, path, furthest, size, b"ZISRAWSUBBLOCK"))
    if ends and max(ends) > size:
        raise ConversionError(f"{path.name} is truncated: its directories place data up to byte {max(ends)}, the "
                              f"file holds {size} bytes (an interrupted copy?)")


def _segment_end(f, path: Path, position: int, size: int, kind: bytes) -> int:
    """Where the segment at `position` ends; past the end of the file when the file is cut short."""
    if position > size - 32:
        return position + 32  # its header is beyond the end
    f.seek(max(position, 0))
    header = f.read(32)
    if position <= 0 or not header.startswith(kind):
        raise ConversionError(f"{path.name}: no CZI {kind.decode()} segment at byte {position}, where the file "
                              f"places one; the file is damaged")
    allocated, used = struct.unpack_from("<qq", header, 16)
    return position + 32 + (used or allocated)


def _furthest_block(f, path: Path, directory: int, size: int) -> int:
    """The file position of the image block furthest into this file part (0: none), or the end of a cut
    directory. The subblock directory holds a count at byte 32 of its segment, entries from byte 160
    (32 bytes: FilePosition at 6, FilePart at 14, the dimension count at 28; then 20 bytes per
    dimension). Read entry by entry: a mosaic's directory runs to many megabytes."""
    end = _segment_end(f, path, directory, size, b"ZISRAWDIRECTORY")
    if end > size:
        return end
    f.seek(directory + 32)
    count, = struct.unpack("<i", f.read(4))
    f.seek(directory + 160)
    furthest = 0
    for entry in range(max(count, 0)):
        fixed = f.read(32)
        dimensions = struct.unpack_from("<i", fixed, 28)[0] if len(fixed) == 32 else -1
        # every entry moves forward and stays inside the directory: at most one pass over it
        if dimensions < 0 or f.tell() > end or not fixed.startswith(b"DV"):
            raise ConversionError(f"{path.name}: its CZI subblock directory is damaged (entry {entry + 1} of "
                                  f"{count})")
        position, part = struct.unpack_from("<qi", fixed, 6)
        if part == 0:  # the others live in the other files of a multi-part CZI
            furthest = max(furthest, position)
        f.seek(20 * dimensions, 1)
    return furthest


def _metadata_xml(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(100)
        if len(head) < 100:
            raise ConversionError(f"{path.name} is truncated inside its CZI file header")
        (position,) = struct.unpack_from("<q", head, 92)
        if not 0 < position < size - 288:
            raise ConversionError(f"{path.name}: the CZI header points to metadata at byte {position}, outside the file")
        f.seek(position)
        segment = f.read(40)
        if not segment.startswith(b"ZISRAWMETADATA"):
            raise ConversionError(f"{path.name}: no CZI metadata segment at byte {position}")
        (xml_size,) = struct.unpack_from("<i", segment, 32)
        if not 0 < xml_size <= min(MAX_XML_BYTES, size - position - 288):
            raise ConversionError(f"{path.name} is truncated: its metadata claims {xml_size} bytes")
        f.seek(position + 32 + 256)
        data = f.read(xml_size)
    try:
        return data.decode("utf-8").rstrip("\x00")
    except UnicodeDecodeError:
        raise ConversionError(f"{path.name}: the CZI metadata is not UTF-8 text") from None


def _tree(element: ET.Element) -> dict | str:
    if len(element) == 0:
        return clean(element.text or "")
    out: dict = {}
    seen: dict[str, int] = {}
    for child in element:
        name = child.tag + (f"[{child.get('Id') or child.get('Name')}]" if child.get("Id") or child.get("Name") else "")
        out[fresh_key(name, out, seen)] = _tree(child)
    return out


def _int(text, default: int) -> int:
    try:
        return max(1, int(text))
    except (TypeError, ValueError):
        return default


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
