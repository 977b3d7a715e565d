"""Walk a DigitalMicrograph tag tree before RosettaSciIO reads it, checking every declared count.

rsciio's parser (DigitalMicrographReader.parse_tags) trusts each count it meets: an array of 2**31
structs without fields becomes a list of 2**31 empty tuples, a text of a million characters is built
one byte at a time. This walk follows the same layout, reads only the tags' headers and skips their
data, and refuses a count the bytes after it cannot hold, or more values outside the image data than
a real file has. Where the layout is one rsciio itself rejects, the walk stops and leaves the message
to rsciio's reader.

Layout (all header numbers big-endian, 4 bytes in DM3, 8 in DM4): a group is sorted and open flags
(1 byte each), [DM4: its size], its tag count; a tag is its kind (20 group, 21 data), a name length
(2 bytes) and the name, [DM4: its size]; a data tag then "%%%%", the length of its info array and the
info array, which says how the data that follows is laid out.
"""
from __future__ import annotations

import struct
from pathlib import Path

from converters.base import ConversionError

# bytes of each simple DM type (rsciio's get_data_reader)
_SIMPLE = {2: 2, 3: 4, 4: 2, 5: 4, 6: 4, 7: 8, 8: 1, 9: 1, 10: 1, 11: 8, 12: 8}
MAX_VALUES = 2**21  # values rsciio turns into Python objects (all but the image data): real files hold thousands
MAX_TAGS = 2**20
MAX_TEXT = 2**16  # characters of one text: rsciio builds it byte by byte, in time quadratic in its length
MAX_FIELDS = 1024  # fields of one struct: real ones have two to four
MAX_DEPTH = 100


class _Stop(Exception):
    """A layout rsciio rejects with its own error: leave the message to it."""


class _Walk:
    def __init__(self, f, path: Path, version: int):
        self.f, self.path, self.size = f, path, path.stat().st_size
        self.number = struct.Struct(">I" if version == 3 else ">Q")
        self.dm4 = version == 4
        self.values = self.tags = 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _Stop
        return data

    def count(self) -> int:
        return self.number.unpack(self.read(self.number.size))[0]

    def left(self) -> int:
        return self.size - self.f.tell()

    def holds(self, tag: str, needed: int, what: str) -> None:
        """Refuse data the rest of the file cannot hold."""
        if needed > self.left():
            raise ConversionError(f"{self.path.name}: tag {tag} declares {what} ({needed:,} bytes) at byte "
                                  f"{self.f.tell():,}; the file holds {self.left():,} bytes from there")

    def materialised(self, tag: str, count: int) -> None:
        """Count values rsciio will hold as Python objects."""
        self.values += count
        if count > MAX_VALUES or self.values > MAX_VALUES:
            raise ConversionError(f"{self.path.name}: tag {tag} declares {count:,} values; the tags beside a "
                                  f"DigitalMicrograph image hold at most {MAX_VALUES:,} in all, so the file is damaged")

    def text(self, tag: str, length: int, skipped: bool) -> None:
        if length > MAX_TEXT and not skipped:
            raise ConversionError(f"{self.path.name}: tag {tag} declares a text of {length:,} characters; "
                                  f"DigitalMicrograph texts hold at most {MAX_TEXT:,}, so the file is damaged")

    def group(self, tag: str, depth: int) -> int:
        self.read(2)  # sorted, open
        if self.dm4 and depth:
            self.count()  # the group's size (the root has none)
        tags = self.count()
        self.tags += tags
        if depth > MAX_DEPTH:
            raise ConversionError(f"{self.path.name}: its tags nest more than {MAX_DEPTH} groups deep; the file is damaged")
        if tags * 3 > self.left() or self.tags > MAX_TAGS:  # a tag takes 3 bytes at the very least
            raise ConversionError(f"{self.path.name}: tag group {tag} declares {tags:,} tags; the file holds "
                                  f"{self.left():,} bytes from there, and real files at most {MAX_TAGS:,} tags")
        return tags

    def struct_fields(self, tag: str) -> list[int]:
        self.count()  # the struct's name length
        fields = self.count()
        if fields > MAX_FIELDS:
            raise ConversionError(f"{self.path.name}: tag {tag} declares a struct of {fields:,} fields; real ones "
                                  f"have a few, so the file is damaged")
        types = [self.count() for _ in range(2 * fields)][1::2]  # (name length, type) per field
        if any(t not in _SIMPLE for t in types):
            raise _Stop
        return types

    def data(self, tag: str, skipped: bool) -> None:
        """Skip one data tag's data, checking its declared size first."""
        if self.dm4:
            self.read(8)
        if self.read(4) != b"%%%%":
            raise _Stop
        info, kind = self.count(), None
        if info >= 1:
            kind = self.count()
        if info == 1 and kind in _SIMPLE:
            needed, count = _SIMPLE[kind], 1
        elif info == 2 and kind == 18:  # text, read one byte at a time
            count = needed = self.count()
            self.text(tag, count, skipped)
        elif info == 3 and kind == 20:  # an array of a simple type
            element = self.count()
            count = self.count()
            if element not in _SIMPLE:
                raise _Stop
            needed = count * _SIMPLE[element]
        elif info > 3 and kind == 15:  # a struct
            types = self.struct_fields(tag)
            count, needed = len(types), sum(_SIMPLE[t] for t in types)
        elif info > 3 and kind == 20:
            element = self.count()
            if element == 15:  # an array of structs
                types = self.struct_fields(tag)
                count = self.count()
                needed = count * sum(_SIMPLE[t] for t in types)
            elif element == 18:  # an array of texts
                length, count = self.count(), self.count()
                self.text(tag, length, skipped)
                needed = count * length
            else:
                raise _Stop
        else:
            raise _Stop
        if not skipped:
            self.materialised(tag, count)
        self.holds(tag, needed, f"{count:,} values")
        self.f.seek(needed, 1)


def check_tags(path: Path) -> None:
    """Walk the whole tag tree of a DM3/DM4 file; ConversionError for a count the file cannot hold."""
    with open(path, "rb") as f:
        version = int.from_bytes(f.read(4), "big")
        walk = _Walk(f, path, version)
        try:
            walk.count()  # the file's size
            walk.read(4)  # its byte order
            # each open group: its name and the tags still to read in it
            stack = [("root", walk.group("root", 0))]
            while stack:
                name, remaining = stack[-1]
                if not remaining:
                    stack.pop()
                    continue
                stack[-1] = (name, remaining - 1)
                kind = walk.read(1)[0]
                length = struct.unpack(">h", walk.read(2))[0]
                tag = walk.read(max(0, length)).decode("latin-1").replace(".", "")
                if kind == 20:
                    stack.append((tag, walk.group(tag or "(unnamed)", len(stack))))
                elif kind == 21:
                    walk.data(tag or "(unnamed)", skipped=name == "ImageData" and tag == "Data")
                else:
                    raise _Stop
        except _Stop:
            return
