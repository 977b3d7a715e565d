"""Convert microscope files to OME-TIFF from the command line, grouped as the portal groups them.

    python -m converters.cli INPUT... --out DIR [--json] [--timezone ZONE] [--compression zstd]

With --json, one JSON object per job per line: `output` is the primary image, `outputs` every image
file, `attachments` the spectra files, `accounted` where each dataset of the source went, and
`warnings` what a researcher must check. Exit status 1 when any job failed.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from converters.base import Conversion, ConversionError, ConvertOptions
from converters.grouping import group_files
from converters.registry import convert


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"unknown time zone {args.timezone!r} (use an IANA name such as Europe/Stockholm)", file=sys.stderr)
        return 2
    names = _load_names(args.microscope_names)
    if names is None:
        return 2
    options = replace(ConvertOptions(), timezone=zone, microscope_names=names, compression=args.compression)
    # group by name as the portal does, then map the names back to the paths given
    paths = {p.as_posix(): p for p in (Path(i) for i in args.inputs)}
    failed = False
    stems: Counter[str] = Counter()
    for group in group_files(list(paths)):
        files = [paths[n] for n in group.files]
        # same-named files from different folders must not overwrite each other's output
        stems[files[0].stem.lower()] += 1
        out = Path(args.out) if stems[files[0].stem.lower()] == 1 else Path(args.out) / str(stems[files[0].stem.lower()])
        try:
            if group.error:
                raise ConversionError(group.error)
            result = convert(files, out, options)
            record = _record(result)
        except ConversionError as e:
            failed = True
            record = _failed(files, str(e))
        _report(record, args.json)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convert", description="Convert EM files to OME-TIFF.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files; partners (EMI+SER, MRC+XML) are grouped")
    parser.add_argument("--out", required=True, help="directory for the OME-TIFF files")
    parser.add_argument("--json", action="store_true", help="print one JSON object per job")
    parser.add_argument("--timezone", default="UTC", help="zone of instruments that store local time")
    parser.add_argument("--compression", default="zstd", help="zstd (default), zlib, lzw or none")
    parser.add_argument("--microscope-names", metavar="FILE", help="JSON object: raw instrument name -> friendly")
    return parser


def _load_names(path: str | None) -> dict[str, str] | None:
    if not path:
        return {}
    try:
        names = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"cannot read microscope names from {path}: {e}", file=sys.stderr)
        return None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        print(f"{path} must hold a JSON object of names", file=sys.stderr)
        return None
    return names


def _record(result: Conversion) -> dict:
    size = result.pixel_size
    return {
        "inputs": [str(p) for p in result.inputs],
        "output": str(result.output),
        "status": result.status,
        "error": None,
        "microscope": result.microscope,
        "acquired": result.acquired.isoformat() if result.acquired else None,
        "pixel_size": {"x": size.x, "y": size.y, "unit": size.unit} if size else None,
        "channels": result.channels,
        "shape": {axis: result.shape.get(axis, 1) for axis in "TCZYX"},
        "notes": result.notes,
        "outputs": [str(image.path) for image in result.images],
        "attachments": [{"path": str(a.path), "kind": a.kind, "title": a.title} for a in result.attachments],
        "warnings": result.warnings,
        "accounted": [{"source": a.source, "went": a.went, "where": a.where} for a in result.accounted],
    }


def _failed(files: list[Path], error: str) -> dict:
    return {
        "inputs": [str(p) for p in files], "output": None, "status": "failed", "error": error,
        "microscope": None, "acquired": None, "pixel_size": None, "channels": [], "shape": None, "notes": [],
        "outputs": [], "attachments": [], "warnings": [], "accounted": [],
    }


def _report(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, ensure_ascii=False), flush=True)
    elif record["status"] == "failed":
        print(f"FAILED {', '.join(record['inputs'])}: {record['error']}", flush=True)
    else:
        shape = "x".join(f"{record['shape'][a]}{a}" for a in "TCZYX")
        more = len(record["outputs"]) - 1
        extra = f" and {more} more image{'s' if more > 1 else ''}" if more > 0 else ""
        print(f"{record['status']} {record['inputs'][0]} -> {record['output']} ({shape}){extra}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
