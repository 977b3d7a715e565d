"""Group file names into import jobs: one job per file, or per EMI + SERs and MRC + XML.

Works on names only ('/'-separated relative paths), so the web API, the command-line tools and the
browser (through the API) share one rule. Partners must sit in the same folder.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from posixpath import basename, dirname

SUPPORTED_SUFFIXES = (".emd", ".h5", ".emi", ".ser", ".mrc", ".xml", ".tif", ".tiff", ".btf", ".czi", ".dm3", ".dm4")
_SER_NAME = re.compile(r"^(?P<stem>.+)_(?P<index>\d+)\.ser$", re.IGNORECASE)


@dataclass
class FileGroup:
    files: list[str]  # the primary file first
    kind: str  # "tia" | "mrc" | "single"
    error: str | None = None  # why this group cannot be imported (missing partner, unsupported)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why a file found in a folder is left out (not an error): "system files"


# What operating systems leave in a session folder besides the data (compared lower-case).
_SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"}
_SYSTEM_FOLDERS = {"__macosx", "$recycle.bin", "system volume information"}


def skip_reason(name: str) -> str | None:
    """Why a file that came with a chosen folder (its name has a folder part) is left out rather
    than failed: system and hidden files, and formats the portal does not read. None: it counts."""
    parts = name.split("/")
    if len(parts) < 2:
        return None  # chosen by itself: the researcher meant it, so it keeps its error
    base = parts[-1].lower()
    if (base in _SYSTEM_FILES or base.startswith(("~$", ".~lock"))
            or any(part.startswith(".") or part.lower() in _SYSTEM_FOLDERS for part in parts)):
        return "system files"
    ext = suffix(name)
    if ext not in SUPPORTED_SUFFIXES:
        return f"{ext} files" if ext else "files without an extension"
    return None


# Control characters, the text-direction overrides that make "gpj.exe" read as "exe.jpg", and lone
# surrogates (how Python holds file-name bytes that are not UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # the byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown_name(name: str) -> str:
    """The name as it can be stored and shown: unsafe characters and undecodable bytes escaped."""
    return _UNSAFE.sub(lambda m: _escaped(m[0]), name)


def name_problem(name: str) -> str | None:
    """Why the portal refuses this name from a client, or None (local tools may use any path)."""
    shown = shown_name(name)
    if re.search("[\ud800-\udfff]", name):
        return f"{shown}: the name is not valid UTF-8 text (its bytes are shown as \\x..); rename the file"
    if shown != name:
        return f"{shown}: the name holds control or text-direction characters; rename the file"
    if name.startswith(("/", "\\")) or any(part in ("", ".", "..") for part in re.split(r"[/\\]", name)):
        return f"{shown}: a name must be a path inside the chosen folder, without '..' or a leading '/'"
    return None


def suffix(name: str) -> str:
    name = basename(name).lower()
    return name[name.rfind("."):] if "." in name else ""


def stem(name: str) -> str:
    name = basename(name)
    return name[: name.rfind(".")] if "." in name else name


def group_files(names: Iterable[str], skip_unread: bool = False) -> list[FileGroup]:
    """Return the jobs these files make, in the order the files were given.

    skip_unread: the names are relative to what a user chose (the web API, push); files that came
    with a folder and that the portal does not read become skipped groups (see skip_reason).
    """
    names = list(dict.fromkeys(names))  # a name given twice is one file
    skipped = {name: reason for name in names if skip_unread and (reason := skip_reason(name))}
    names = [name for name in names if name not in skipped]
    by_key: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name in names:
        ser = _SER_NAME.match(basename(name))
        if ser:
            by_key[(dirname(name), ser["stem"].lower(), "ser")].append(name)
        else:
            by_key[(dirname(name), stem(name).lower(), suffix(name))].append(name)

    groups: list[FileGroup] = []
    claimed: set[str] = set()
    for name in names:
        if name in claimed:
            continue
        folder, key, ext = dirname(name), stem(name).lower(), suffix(name)
        ser = _SER_NAME.match(basename(name))
        if ser:
            emis = by_key.get((folder, ser["stem"].lower(), ".emi"))
            if emis:
                continue  # taken by its .emi, wherever that stands in the list
            group = FileGroup([name], "tia", f"{basename(name)} needs its {ser['stem']}.emi in the same folder")
        elif ext == ".ser":
            group = FileGroup([name], "tia", f"{basename(name)} needs its .emi file (named like "
                                             f"{stem(name)}.emi, with the .ser as {stem(name)}_1.ser)")
        elif ext == ".emi":
            sers = sorted(by_key.get((folder, key, "ser"), []), key=_ser_index)
            error = None if sers else f"{basename(name)} has no .ser file (expected {stem(name)}_1.ser beside it)"
            group = FileGroup([name, *sers], "tia", error)
        elif ext == ".mrc":
            xmls = by_key.get((folder, key, ".xml"), [])
            error = None if xmls else f"{basename(name)} needs its ATLAS/EPU metadata file {stem(name)}.xml beside it"
            group = FileGroup([name, *xmls[:1]], "mrc", error)
        elif ext == ".xml":
            if by_key.get((folder, key, ".mrc")):
                continue
            group = FileGroup([name], "mrc", f"{basename(name)} needs its image {stem(name)}.mrc beside it")
            if skip_unread and folder:  # a folder's other XML (exports, settings) is not an image's metadata
                group.error, group.skipped = None, ".xml files without an .mrc"
        elif ext in SUPPORTED_SUFFIXES:
            group = FileGroup([name], "single")
        else:
            shown = ext or "without an extension"
            group = FileGroup(
                [name], "single",
                f"{basename(name)}: files {shown} are not supported (EMD, EMI+SER, MRC+XML, DM3/DM4, TIFF, OME-TIFF and CZI are)",
            )
        claimed.update(group.files)
        groups.append(group)
    return groups + [FileGroup([name], "single", skipped=reason) for name, reason in skipped.items()]


def _ser_index(name: str) -> int:
    match = _SER_NAME.match(basename(name))
    return int(match["index"]) if match else 0
