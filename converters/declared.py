"""What each format plugin declares, read from its source as plain literals, never by importing it.

The light client (app.client) groups files without numpy or the readers, so a plugin's declarations
are module-level literals that this module reads with `ast.literal_eval`:

    NAME = "TIA EMI"                     shown to researchers
    EXTENSIONS = (".emi",)               the lower-case suffixes its files carry
    PRIORITY = 20                        (optional) lower is asked first by the registry
    HELP = "FEI/Thermo TEM and STEM..."   one line for the help page and the README table
    PARTNERS = ({"name": "{stem}_{n}.ser", "what": ".ser file", "required": True},)
    SIDECARS = ({"name": "{stem}.xml", "what": "ATLAS/EPU metadata file", "required": False},)

A partner holds data of the primary file (a SER beside its EMI); a sidecar only describes it (an EPU
XML, a SEM's .txt). Either may be required (the group is refused without it) or optional (read when
present). A lone partner is an error; a lone sidecar found in a chosen folder is skipped. `name` is a
template of the partner's file name: `{n}` is a number (any count of such files, in numeric order), any
other `{field}` is text taken from the primary's name through `primary` (default "{stem}" + each of
EXTENSIONS), e.g. {"primary": "{prefix}_movie.mrc", "name": "{prefix}_info.txt", ...}; the fields are
read from the partner's name, so "{prefix}_{image}.mrc" finds its prefix however many '_' it holds (the
longest partner name that fits wins). Names match case-insensitively, in the same folder. A file is in one
job, except a sidecar declared `"shared": True`: it goes with every primary it describes (a Direct
Electron info file with each MRC of its acquisition), and each of those jobs gets its own copy of it.

A plugin without HELP only explains what is missing (a SER or an EPU XML on its own): its suffixes are
read only beside their primary. A suffix that is a partner's and also a reader's (an EDAX .spc: the
energy calibration of its .spd map, or a spectrum on its own) makes a job of its own when no primary
of its folder takes it.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path

_FIELD = re.compile(r"\{(\w+)\}")
_KEYS = ("NAME", "EXTENSIONS", "PRIORITY", "HELP", "PARTNERS", "SIDECARS")
_RULE_KEYS = {"name", "what", "required", "primary", "shared"}


@dataclass(frozen=True)
class Rule:
    """One partner or sidecar of a primary file."""
    format: str  # the declaring plugin's module name (a group's kind)
    primaries: tuple[str, ...]  # templates of the primary's name
    name: str  # template of the partner's name
    what: str  # "ATLAS/EPU metadata file"
    required: bool
    sidecar: bool
    shared: bool = False  # a sidecar that goes with every primary it describes, not only the first


    @property
    def many(self) -> bool:
        return "{n}" in self.name

    @property
    def suffix(self) -> str:
        return self.name[self.name.rfind("."):].lower()

    def primary_fields(self, base: str) -> dict[str, str] | None:
        """The fields of a primary's name ({"stem": "grid"}), or None when the rule is not for it."""
        for template in self.primaries:
            match = pattern(template).fullmatch(base)
            if match:
                return match.groupdict()
        return None

    def partner_fields(self, base: str) -> dict[str, str] | None:
        match = pattern(self.name).fullmatch(base)
        return match.groupdict() if match else None

    def describes(self, base: str, partner_fields: dict[str, str]) -> bool:
        """Whether the partner whose name gave these fields goes with the primary named `base`."""
        known = tuple(sorted((k, v) for k, v in partner_fields.items() if k != "n"))
        return any(pattern(template, known).fullmatch(base) for template in self.primaries)


@dataclass(frozen=True)
class Format:
    module: str
    name: str
    extensions: tuple[str, ...]
    priority: int
    help: str | None
    rules: tuple[Rule, ...]


def fill(template: str, fields: dict[str, str]) -> str:
    """A template with its fields filled ({n} is 1 unless given)."""
    return _FIELD.sub(lambda m: fields.get(m[1], "1" if m[1] == "n" else m[0]), template)


def shown(template: str) -> str:
    """A template as researchers read it: "<stem>_<n>.ser"."""
    return _FIELD.sub(lambda m: f"<{m[1]}>", template)


@cache
def pattern(template: str, known: tuple[tuple[str, str], ...] = ()) -> re.Pattern[str]:
    """The regular expression of a file-name template; known fields match only their own text."""
    fields = dict(known)
    parts = []
    for i, part in enumerate(_FIELD.split(template)):
        if i % 2 == 0:
            parts.append(re.escape(part))
        elif part in fields:
            parts.append(re.escape(fields[part]))
        else:
            parts.append(rf"(?P<{part}>\d+)" if part == "n" else rf"(?P<{part}>.+)")
    return re.compile("".join(parts), re.IGNORECASE)


def _literals(path: Path) -> dict | None:
    """The declarations of one plugin module, or None when it is not a plugin (no identify/read)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if not {"identify", "read"} <= functions:
        return None
    found = {}
    for node in tree.body:
        pairs = []  # (name, value) of `NAME = ...` and `NAME, EXTENSIONS = ..., ...`
        for target in node.targets if isinstance(node, ast.Assign) else []:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs += zip(target.elts, node.value.elts)
            else:
                pairs.append((target, node.value))
        for target, value in pairs:
            if isinstance(target, ast.Name) and target.id in _KEYS:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    raise ValueError(f"{path.name}: {target.id} must be a plain literal (the light client reads "
                                     f"it without importing the plugin)") from None
    if not {"NAME", "EXTENSIONS"} <= found.keys():
        raise ValueError(f"{path.name}: a plugin declares NAME and EXTENSIONS")
    return found


def _format(module: str, path: Path, found: dict) -> Format:
    extensions = tuple(found["EXTENSIONS"])
    rules = []
    for key, sidecar in (("PARTNERS", False), ("SIDECARS", True)):
        for rule in found.get(key, ()):
            if set(rule) - _RULE_KEYS or not {"name", "what"} <= set(rule):
                raise ValueError(f"{path.name}: each of {key} needs 'name' and 'what' and may have "
                                 f"'required', 'primary' and 'shared' ({rule!r})")
            if rule.get("shared") and not sidecar:
                raise ValueError(f"{path.name}: only a sidecar can be shared: a partner's data is one image's ({rule!r})")
            primaries = (rule["primary"],) if "primary" in rule else tuple("{stem}" + e for e in extensions)
            rules.append(Rule(module, primaries, rule["name"], rule["what"], bool(rule.get("required")), sidecar,
                              bool(rule.get("shared"))))
    return Format(module, found["NAME"], extensions, found.get("PRIORITY", 50), found.get("HELP"), tuple(rules))


@cache
def formats() -> tuple[Format, ...]:
    """Every plugin's declarations, in the order the registry asks them."""
    package = import_module("converters.formats")  # its __init__ is a docstring: nothing heavy
    found = []
    for folder in package.__path__:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            literals = _literals(path)
            if literals is not None:
                found.append(_format(path.stem, path, literals))
    return tuple(sorted(found, key=lambda f: (f.priority, f.module)))


def rules() -> tuple[Rule, ...]:
    return tuple(rule for f in formats() for rule in f.rules)


def partner_suffixes() -> set[str]:
    return {rule.suffix for rule in rules()}


def primary_suffixes() -> tuple[str, ...]:
    """Suffixes of files read on their own (a SER or an EPU XML is read only with its primary)."""
    return tuple(dict.fromkeys(e for f in readers() for e in f.extensions))


def suffixes() -> tuple[str, ...]:
    """Every suffix the portal reads, as a primary file or beside one."""
    return tuple(dict.fromkeys([*primary_suffixes(), *sorted(partner_suffixes())]))


def readers() -> tuple[Format, ...]:
    """The formats a researcher can send (not the partner-only plugins that explain what is missing)."""
    return tuple(f for f in formats() if f.help)


def files_read(f: Format) -> str:
    """What one format's files are: ".mrc (with <stem>.xml, optional)"."""
    # one line per partner name (several primaries, e.g. a movie with or without its number, may share one)
    beside = list(dict.fromkeys(f"{shown(r.name)}{'' if r.required else ', optional'}" for r in f.rules))
    return " ".join(f.extensions) + (f" (with {'; '.join(beside)})" if beside else "")


def summary() -> str:
    """The suffixes read, for "not supported" messages: ".emd, .h5, .emi with .ser, ..."."""
    required = {}
    for rule in rules():
        if rule.required:
            for template in rule.primaries:
                required.setdefault(template[template.rfind("."):].lower(), rule.suffix)
    return ", ".join(f"{e} with {required[e]}" if e in required else e for e in primary_suffixes())


def markdown_table() -> str:
    """The README's table of formats (tests/test_declared.py keeps the README equal to it)."""
    rows = ["| Format | Files | What the portal does |", "|---|---|---|"]
    rows += [f"| {f.name} | `{files_read(f)}` | {f.help} |" for f in readers()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
