"""Group file names into import jobs: one job per file, or per file with its partners (EMI + SERs,
MRC + XML), as the format plugins declare them (converters.declared).

Works on names only ('/'-separated relative paths), so the web API, the command-line tools and the
browser (through the API) share one rule. Partners must sit in the same folder.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from posixpath import basename, dirname

import converters.declared as declared
from converters.declared import fill



@dataclass
class FileGroup:
    files: list[str]  # the primary file first
    kind: str  # "single", or the module of the plugin whose partners the group holds or misses ("tia")
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
    if ext not in declared.suffixes():
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

    Each primary file takes the partners and sidecars its plugins declare (converters.declared),
    wherever they stand in the list; a file is in one group, except a shared sidecar (a Direct Electron
    info file), which is in the group of each primary it describes. skip_unread: the names are relative to what a user chose (the web
    API, push); files that came with a folder and that the portal does not read become skipped groups
    (see skip_reason), and so do sidecars without their image; skipped groups come last, in the order given.
    """
    names = given = list(dict.fromkeys(names))  # a name given twice is one file
    skipped = {name: reason for name in names if skip_unread and (reason := skip_reason(name))}
    names = [name for name in names if name not in skipped]
    # folder -> suffix -> lower-case base name -> name: a primary looks only at its rules' suffixes
    in_folder: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for name in names:
        in_folder[dirname(name)][suffix(name)].setdefault(basename(name).lower(), name)
    owner: dict[str, str] = {}  # partner -> its (first) primary
    shared: set[str] = set()  # sidecars taken by a shared rule: other primaries may take them too
    taken: dict[str, tuple[list[str], str, str | None]] = {}  # primary -> (partners, kind, error)
    primaries, partners = declared.primary_suffixes(), declared.partner_suffixes()
    # a file that may be another's partner (an .spc beside its .spd) is a primary once none has taken it
    for maybe_partner in (False, True):
        for name in names:
            ext = suffix(name)
            if ext in primaries and (ext in partners) == maybe_partner and name not in owner:
                taken[name] = _take_partners(name, in_folder[dirname(name)], owner, shared)

    groups: list[FileGroup] = []
    for name in names:
        if name in owner:
            continue
        if name in taken:
            partners, kind, error = taken[name]
            group = FileGroup([name, *partners], kind, error)
        elif suffix(name) in declared.partner_suffixes():
            group = _alone(name, skip_unread)
        else:
            shown = suffix(name) or "without an extension"
            group = FileGroup([name], "single", f"{basename(name)}: files {shown} are not supported "
                                                f"(the portal reads {declared.summary()})")
        groups.append(group)
    groups += [FileGroup([name], "single", skipped=reason) for name, reason in skipped.items()]
    order = {name: i for i, name in enumerate(given)}
    return [g for g in groups if not g.skipped] + sorted((g for g in groups if g.skipped), key=lambda g: order[g.files[0]])


def _take_partners(name: str, folder: dict[str, dict[str, str]], owner: dict[str, str],
                   shared: set[str]) -> tuple[list[str], str, str | None]:
    """The partners a primary file takes from its folder, its kind and what required one is missing."""
    base, found, kinds, error = basename(name), [], [], None
    for rule in declared.rules():
        fields = rule.primary_fields(base)
        if fields is None:
            continue
        mine = [(n, other) for lower, other in folder[rule.suffix].items()
                if (other not in owner or (rule.shared and other in shared))
                and (n := rule.partner_fields(lower)) is not None and rule.describes(base, n)]
        if rule.many:
            mine = [other for n, other in sorted(mine, key=lambda pair: int(pair[0]["n"]))]
        else:  # the most specific name: A_B_info.txt before A_info.txt for A_B_movie.mrc
            mine = [max(mine, key=lambda pair: len(pair[1]))[1]] if mine else []
        if mine or rule.required:
            kinds.append(rule.format)
        found += mine
        for other in mine:
            owner.setdefault(other, name)
        if rule.shared:
            shared.update(mine)
        if not mine and rule.required and error is None:
            expected = fill(rule.name, fields)
            error = (f"{base} has no {rule.what} (expected {expected} beside it)" if rule.many
                     else f"{base} needs its {rule.what} {expected} beside it")
    return found, kinds[0] if kinds else "single", error


def _alone(name: str, skip_unread: bool) -> FileGroup:
    """A partner or sidecar without its primary file: an error, or skipped when a folder brought it."""
    base, ext = basename(name), suffix(name)
    rules = [rule for rule in declared.rules() if rule.suffix == ext]
    # the plugin whose primary this file names (notes.txt: a SEM TIFF's, not a Direct Electron MRC's)
    kind = next((rule.format for rule in rules if rule.partner_fields(base) is not None), rules[0].format)
    if skip_unread and dirname(name) and all(rule.sidecar for rule in rules):
        # a folder's other XML or text (exports, settings, notes) is not an image's metadata
        primaries = set(t[t.rfind("."):] for rule in rules for t in rule.primaries)
        # the image it would describe, when there is one kind ("without an .mrc"); a .txt is mostly notes
        return FileGroup([name], kind, skipped=f"{ext} files" + (f" without an {primaries.pop()}" if len(primaries) == 1 else ""))
    wanted = [declared.shown(fill(rule.primaries[0], fields)) for rule in rules if (fields := rule.partner_fields(base)) is not None]
    if wanted and all(rule.sidecar for rule in rules):  # metadata only: most likely not meant as an image's
        return FileGroup([name], kind, f"{base}: files {ext} are not supported on their own, only as the metadata "
                                       f"beside an image ({' or '.join(dict.fromkeys(wanted))} in the same folder)")
    if wanted:
        return FileGroup([name], kind, f"{base} needs its {' or '.join(dict.fromkeys(wanted))} in the same folder")
    rule, own = rules[0], {"stem": stem(name), "prefix": stem(name)}
    primary = rule.primaries[0]
    return FileGroup([name], kind, f"{base} needs its {primary[primary.rfind('.'):]} file (named like "
                                   f"{fill(primary, own)}, with the {ext} as {fill(rule.name, own)})")
