"""Bounds every reader applies before it allocates or loops on what a file declares.

A header is a claim; the bytes present are the fact. Each reader compares the two before it trusts a
count (pixels, spectrum channels, array elements, XML elements) and refuses with a message that says
what the file claims and what it holds. The numbers here are far above what any real acquisition
writes, so a valid file never meets them; a file of a few kilobytes that declares gigabytes does.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from xml.etree import ElementTree as ET

from converters.base import ConversionError
from converters.meta import human_size

# Microscope images compress a few times at most; pixels a thousand times the file's size are a
# decompression bomb (or sparse HDF5 with no data), which would fill the disk or OMERO with nothing.
MAX_INFLATION = 1000
BOMB_FLOOR = 64 * 2**20  # below this, any ratio is harmless
# Spectrometers record 2,048 to 32,768 channels: a million is no spectrum but a CSV of gigabytes.
MAX_SPECTRUM_CHANNELS = 2**20
# Metadata XML nests a dozen levels and holds thousands of elements (a big CZI: ~100,000).
MAX_XML_DEPTH = 100
MAX_XML_ELEMENTS = 500_000
READ_BLOCK = 2**24  # array elements read at once when summing or scanning an array


def refuse_inflated(name: str, declared: int, stored: int, what: str = "pixels", where: str = "file") -> None:
    """Refuse `declared` bytes of data that `stored` bytes could never have held."""
    if declared > BOMB_FLOOR and declared > MAX_INFLATION * stored:
        why = (f"real data is never {declared // stored:,} times smaller than what it declares" if stored else
               "none of it is stored")
        raise ConversionError(f"{name} declares {human_size(declared)} of {what} in {human_size(stored)} of {where}: "
                              f"refused as a decompression bomb ({why})")


def check_h5(dataset, name: str, what: str) -> None:
    """Refuse an HDF5 dataset whose declared size its stored chunks cannot hold (unwritten chunks read
    as zeros), or whose bytes live outside the file (external storage or a virtual dataset could read
    any file on the server)."""
    if dataset.external or dataset.is_virtual:
        raise ConversionError(f"{name}: {dataset.name} keeps its data outside the file (HDF5 external storage or "
                              f"a virtual dataset); refused, as an upload must hold its own data")
    declared = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
    refuse_inflated(name, declared, dataset.id.get_storage_size(), what, "stored data")


def check_channels(name: str, what: str, channels: int) -> None:
    if channels > MAX_SPECTRUM_CHANNELS:
        raise ConversionError(f"{name}: {what} declares {channels:,} channels; no spectrometer records more than "
                              f"{MAX_SPECTRUM_CHANNELS:,}, so the file is damaged")


def blocks(shape: tuple[int, ...], budget: int = READ_BLOCK) -> Iterator[tuple]:
    """Index tuples that cover an array of `shape` in C order, each selecting at most `budget` elements
    (at least one row of the last axis), so that no read of a large array is larger than that."""
    if not shape:
        yield ()
        return
    inner = math.prod(shape[1:])
    if inner <= budget or len(shape) == 1:
        step = max(1, budget // max(1, inner))
        for i in range(0, shape[0], step):
            yield (slice(i, min(shape[0], i + step)),)
        return
    for i in range(shape[0]):  # one index of the first axis is already too much: split the next axes
        for rest in blocks(shape[1:], budget):
            yield (slice(i, i + 1), *rest)


def parse_xml(data: bytes | str, name: str, what: str = "metadata XML") -> ET.Element:
    """Parse XML whose nesting and element count stay within what metadata needs, so that the
    recursive readers after it cannot overflow Python's stack and no element count can exhaust memory.
    Malformed XML raises ElementTree.ParseError, for the caller's own message."""
    parser = ET.XMLPullParser(events=("start", "end"))
    depth = elements = 0
    root = None
    text = data.encode("utf-8") if isinstance(data, str) else data
    for start in range(0, len(text) or 1, 2**16):
        parser.feed(text[start:start + 2**16])
        for event, element in parser.read_events():
            if event == "end":
                depth -= 1
                continue
            depth, elements = depth + 1, elements + 1
            root = element if root is None else root
            if depth > MAX_XML_DEPTH:
                raise ConversionError(f"{name}: its {what} nests more than {MAX_XML_DEPTH} levels deep; metadata "
                                      f"nests a dozen, so the file is damaged")
            if elements > MAX_XML_ELEMENTS:
                raise ConversionError(f"{name}: its {what} holds more than {MAX_XML_ELEMENTS:,} elements; "
                                      f"metadata holds thousands, so the file is damaged")
    parser.close()  # raises ParseError for a document cut short
    return root
