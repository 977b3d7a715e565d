"""Time converters.convert against `zstd -1 -T2` of the same bytes, and measure its peak memory.

For each format, a real sample is scaled up to about --size-mib (by tiling its pixels; its metadata
is kept), then in one run: `zstd -1 -T2` of the input files (read, compress on two cores, write: the
codec's floor for this work), and the conversion in a fresh subprocess that reports its own peak RSS,
CPU time and how often it reported progress. On a busy machine the ratio of CPU times says more
than the ratio of wall times. Goals (issue 15): at most 1.5x zstd, peak RSS under 300 MiB.

    python benchmarks/convert.py --size-mib 64          # quick, during development
    python benchmarks/convert.py                        # 512 MiB per format
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / ".." / "shared" / "samples"
MIB = 2**20


def tiled(sample: np.ndarray, rows: int, cols: int, y0: int = 0, seed: int = 0) -> np.ndarray:
    """Rows y0..y0+rows of the sample repeated to fill `cols` columns (bounded: one band at a time),
    with a little noise in the low bits, as every real acquisition has. Without it every tile would
    repeat the sample, and zstd would find those repeats across the whole file (no real image offers
    them), while a tiled OME-TIFF compresses each tile alone."""
    sy, sx = sample.shape
    ys = (np.arange(y0, y0 + rows) % sy)[:, None]
    xs = (np.arange(cols) % sx)[None, :]
    band = sample[ys, xs]
    rng = np.random.default_rng([seed, y0])
    if band.dtype.kind == "f":
        return band + rng.normal(0, float(np.std(sample)) * 0.05 or 1e-3, band.shape).astype(band.dtype)
    return band ^ rng.integers(0, 8, band.shape, dtype=band.dtype)


def build_velox(work: Path, size: int, side: int) -> list[Path]:
    src = SAMPLES / "Camera Ceta Imaging Micro.emd"
    path = work / "velox.emd"
    frames = max(1, size // (side * side * 2))
    with h5py.File(src) as f, h5py.File(path, "w") as out:
        for key in f:
            if key != "Data":
                f.copy(key, out)
        [(uuid, group)] = f["Data/Image"].items()
        frame = group["Data"][:, :, 0]
        target = out.create_group(f"Data/Image/{uuid}")
        meta = np.repeat(group["Metadata"][:, :1], frames, axis=1)
        target.create_dataset("Metadata", data=meta, chunks=(meta.shape[0], 1))
        data = target.create_dataset("Data", shape=(side, side, frames), dtype=frame.dtype, chunks=(side, side, 1))
        for t in range(frames):
            data[:, :, t] = np.roll(tiled(frame, side, side, seed=t), t, axis=1)
    return [path]


def build_tia(work: Path, size: int, side: int) -> list[Path]:
    emi, ser = SAMPLES / "64x64x5_TEM_preview.emi", SAMPLES / "64x64x5_TEM_preview_1.ser"
    shutil.copy(emi, work / "tia.emi")
    raw = ser.read_bytes()
    (table,) = struct.unpack_from("<I", raw, 22)
    (first,) = struct.unpack_from("<I", raw, table)
    element = bytearray(raw[first:first + 50])
    element[42:50] = struct.pack("<II", side, side)
    sample = np.frombuffer(raw, "<f4", 64 * 64, first + 50).reshape(64, 64)
    frames = max(1, size // (side * side * 4))
    header = bytearray(raw[:first])  # header and dimension array, as TIA writes them
    struct.pack_into("<II", header, 14, frames, frames)
    struct.pack_into("<I", header, 30, frames)  # dimension size of the series
    offsets = []
    path = work / "tia_1.ser"
    with open(path, "wb") as out:
        out.write(header)
        for t in range(frames):
            offsets.append(out.tell())
            out.write(element)
            for y0 in range(0, side, 1024):
                out.write(np.ascontiguousarray(np.roll(tiled(sample, min(1024, side - y0), side, y0, t), t, 1)).tobytes())
        table = out.tell()
        out.write(np.array(offsets, "<u4").tobytes())
        out.write(np.zeros(frames, "<u4").tobytes())  # tag offsets: none
    with open(path, "r+b") as out:
        out.seek(22)
        out.write(struct.pack("<I", table))
    return [work / "tia.emi", path]


def build_mrc(work: Path, size: int, side: int) -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(SAMPLES / "temp.mrc", permissive=True) as m:
            sample = m.data[0].copy()
    sections = max(1, size // (side * side * 4))
    path = work / "atlas.mrc"
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.zeros((1, 16, 16), np.float32))  # header of the right mode; the data follows by hand
        m.header.nx, m.header.ny, m.header.nz = side, side, sections
        m.header.mx, m.header.my, m.header.mz = side, side, sections
    with open(path, "r+b") as out:
        out.truncate(1024)
        out.seek(1024)
        for z in range(sections):
            for y0 in range(0, side, 1024):
                out.write(np.roll(tiled(sample, min(1024, side - y0), side, y0, z), z, 1).astype("<f4").tobytes())
    shutil.copy(SAMPLES / "Atlas_1.xml", work / "atlas.xml")
    return [path, work / "atlas.xml"]


def _sem(work: Path, size: int, source: str, tag: int, name: str) -> list[Path]:
    with tifffile.TiffFile(SAMPLES / source) as tif:
        page = tif.pages.first
        sample = page.asarray()
        entry = page.tags[tag]
        tif.filehandle.seek(entry.valueoffset)
        value = tif.filehandle.read(entry.count)
    side = max(1024, int(np.sqrt(size)) // 16 * 16)
    path = work / name
    out = tifffile.memmap(path, shape=(side, side), dtype=sample.dtype, photometric="minisblack",
                          extratags=[(tag, 1, len(value), value, False)])
    for y0 in range(0, side, 2048):
        out[y0:y0 + 2048] = tiled(sample, min(2048, side - y0), side, y0)
    out.flush()
    del out
    return [path]


def build_zeiss(work: Path, size: int, side: int) -> list[Path]:
    return _sem(work, size, "sample6_001.tif", 34118, "zeiss.tif")


def build_fei(work: Path, size: int, side: int) -> list[Path]:
    return _sem(work, size, "FEI-Helios-Ebeam-8bits.tif", 34682, "fei.tif")


def build_plain_tiff(work: Path, size: int, side: int) -> list[Path]:
    """A TIFF of a writer no plugin knows (no vendor tag, the 72 dpi default, uncompressed strips of 16
    rows as cameras write them), 16-bit texture from the JEOL SightX sample."""
    sample = tifffile.imread(SAMPLES / "JEOL-SightX-TEM-mag-dummy.tif")
    side = max(1024, int(np.sqrt(size // 2)) // 16 * 16)
    path = work / "plain.tif"
    with tifffile.TiffWriter(path, bigtiff=size >= 2**31) as tif:
        tif.write(shape=(side, side), dtype=sample.dtype, photometric="minisblack", rowsperstrip=16,
                  resolution=(72, 72), resolutionunit="INCH")  # space for the pixels; filled below
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.dataoffsets[0]
    with open(path, "r+b") as out:
        out.seek(offset)
        for y0 in range(0, side, 2048):
            out.write(np.ascontiguousarray(tiled(sample, min(2048, side - y0), side, y0)).tobytes())
    return [path]


BUILDERS = {"Velox EMD": build_velox, "TIA": build_tia, "MRC+XML": build_mrc, "Zeiss SEM": build_zeiss,
            "FEI SEM": build_fei, "TIFF": build_plain_tiff}

CHILD = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from converters import ConvertOptions, convert
from converters.registry import warm_up
warm_up()  # the plugins and their readers imported before the clock starts, as a worker does at start
files = [Path(p) for p in {files!r}]
start, cpu_start = time.perf_counter(), sum(os.times()[:2])
reports = []
options = dict(compression={compression!r}, progress=reports.append)
if {workers!r}:
    options["workers"] = {workers!r}
result = convert(files, Path({out!r}), ConvertOptions(**options))
elapsed = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss would carry the parent's peak over fork and exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
cpu = sum(os.times()[:2]) - cpu_start
print(json.dumps({{"seconds": elapsed, "cpu_seconds": cpu, "rss_kib": hwm, "output": str(result.output),
                  "shape": result.shape, "progress_reports": len(reports)}}))
"""


def build(name: str, work: Path, size: int, side: int) -> list[Path]:
    """Build in a subprocess, so this process (and the page tables it hands on) stays small."""
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import convert as b; "
            f"print(json.dumps([str(p) for p in b.BUILDERS[{name!r}](b.Path({str(work)!r}), {size}, {side})]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    return [Path(p) for p in json.loads(run.stdout.strip().splitlines()[-1])]


def measure(files: list[Path], work: Path, compression: str, workers: int | None) -> dict:
    packed = work / "zstd"
    packed.mkdir(exist_ok=True)
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["zstd", "-1", "-T2", "-q", "-f", "--output-dir-flat", str(packed), *map(str, files)], check=True)
    zstd_seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    zstd_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    shutil.rmtree(packed)
    out = work / "out"
    script = CHILD.format(repo=str(REPO), files=[str(f) for f in files], out=str(out), compression=compression,
                          workers=workers)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    report.update(zstd_seconds=zstd_seconds, zstd_cpu=zstd_cpu, wall=wall, in_bytes=sum(f.stat().st_size for f in files),
                  out_bytes=Path(report["output"]).stat().st_size)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="input size per format (default 512)")
    parser.add_argument("--side", type=int, default=4096, help="frame side for the multi-frame formats")
    parser.add_argument("--formats", nargs="*", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--compression", default="zstd")
    parser.add_argument("--workers", type=int, help="compression threads (default: ConvertOptions' own)")
    parser.add_argument("--workdir", help="where to build inputs (default: a temporary directory)")
    parser.add_argument("--json-out", help="also write the rows as JSON here (benchmarks/run.py)")
    args = parser.parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="convert-bench-"))
    rows = []
    for name in args.formats:
        work = root / name.replace(" ", "_").replace("+", "_")
        work.mkdir(parents=True, exist_ok=True)
        files = build(name, work, args.size_mib * MIB, args.side)
        report = measure(files, work, args.compression, args.workers)
        rows.append((name, report))
        shutil.rmtree(work)
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"\n{'format':<10} {'input MiB':>9} {'output MiB':>10} {'shape (TCZYX)':>24} {'zstd s':>6} "
          f"{'convert s':>9} {'ratio':>6} {'CPU ratio':>9} {'peak RSS MiB':>12} {'progress reports':>16}")
    for name, r in rows:
        shape = "x".join(str(r["shape"][a]) for a in "TCZYX")
        print(f"{name:<10} {r['in_bytes'] / MIB:>9.0f} {r['out_bytes'] / MIB:>10.0f} {shape:>24} "
              f"{r['zstd_seconds']:>6.2f} {r['seconds']:>9.2f} {r['seconds'] / r['zstd_seconds']:>6.2f} "
              f"{r['cpu_seconds'] / r['zstd_cpu']:>9.2f} "
              f"{r['rss_kib'] / 1024:>12.0f} {r['progress_reports']:>16}")
    results.write(args.json_out, "convert", [
        {"case": name, "ratio": r["seconds"] / r["zstd_seconds"], "baseline": "zstd -1 -T2", "goal": "<= 1.5",
         "note": f"CPU time {r['cpu_seconds'] / r['zstd_cpu']:.2f}x zstd's; peak RSS {r['rss_kib'] / 1024:.0f} MiB "
                 f"(goal < 300); {r['progress_reports']} progress reports"}
        for name, r in rows])
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
