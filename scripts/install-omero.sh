#!/usr/bin/env bash
# Install the portal's `omero` extra: omero-py and the zeroc-ice it needs.
#
# omero-py needs zeroc-ice 3.6.5, which PyPI has only as source, and that source does not compile
# on Python >= 3.11 as is. We patch two lines, build the wheel ONCE into a cache outside the repo
# (the build takes 12-15 minutes on 2 cores) and reuse the cached wheel on every later run.
#
#   PYTHON=/path/to/python   interpreter to install into (default: python3)
#   PORTAL_WHEEL_CACHE=dir   where the built wheel is kept (default: ~/.cache/upload-portal/wheels)
set -euo pipefail

ICE_VERSION=3.6.5
PYTHON=${PYTHON:-python3}
CACHE=${PORTAL_WHEEL_CACHE:-$HOME/.cache/upload-portal/wheels}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'install-omero: %s\n' "$*" >&2; }

# The wheel is tied to the interpreter's ABI and platform: find it by those tags.
PYTAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
PLAT=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')
WHEEL_GLOB="zeroc_ice-${ICE_VERSION}-${PYTAG}-${PYTAG}-${PLAT}.whl"

ensure_build_deps() {
    local missing=()
    command -v g++ >/dev/null || missing+=(g++)
    for pkg in libssl-dev libbz2-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing build dependencies: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"  # CI runners are not root but may sudo
    # Refresh the package lists only when installing from the current ones fails.
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        $sudo apt-get update
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

build_wheel() {
    ensure_build_deps
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    log "building zeroc-ice $ICE_VERSION for $PYTAG ($PLAT); this takes 12-15 minutes"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "zeroc-ice==$ICE_VERSION" -d "$work"
    tar -xzf "$work/zeroc-ice-$ICE_VERSION.tar.gz" -C "$work"
    local src="$work/zeroc-ice-$ICE_VERSION"
    # Patch 1: <eval.h> is gone from Python 3.11's headers (its contents moved into Python.h).
    # Patch 2: PyThreadState.frame is private since 3.11; PyEval_GetFrame() returns the same
    # frame as a borrowed reference.
    "$PYTHON" - "$src" <<'PY'
import pathlib, sys
src = pathlib.Path(sys.argv[1])
patches = [
    ("src/Slice.cpp", "#include <eval.h>\n", ""),
    ("src/Util.cpp", "PyFrameObject *f = PyThreadState_GET()->frame;",
     "PyFrameObject *f = PyEval_GetFrame();"),
]
for rel, old, new in patches:
    path = src / rel
    text = path.read_text()
    if text.count(old) != 1:
        sys.exit(f"install-omero: cannot patch {rel}: expected exactly one {old.strip()!r}")
    path.write_text(text.replace(old, new))
PY
    "$PYTHON" -m pip wheel --no-deps --wheel-dir "$work/dist" "$src"
    mkdir -p "$CACHE"
    local built
    built=$(ls "$work"/dist/zeroc_ice-*.whl)
    # Move in atomically so a concurrent or interrupted run never sees half a wheel.
    cp "$built" "$CACHE/.$(basename "$built").tmp"
    mv "$CACHE/.$(basename "$built").tmp" "$CACHE/$(basename "$built")"
    log "cached $(basename "$built") in $CACHE"
}

wheel=$(ls "$CACHE"/$WHEEL_GLOB 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    build_wheel
    wheel=$(ls "$CACHE"/$WHEEL_GLOB | head -n1)
else
    log "reusing cached $wheel"
fi

"$PYTHON" -m pip install "$wheel"
# The `omero` extra's requirements, read from pyproject.toml so the pin lives in one place. The
# project itself is not installed here (CI installs it with its other extras): installing it
# editable from a worktree would repoint a shared environment at that worktree.
mapfile -t extra < <("$PYTHON" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["omero"]))
PY
)
"$PYTHON" -m pip install "${extra[@]}"
"$PYTHON" -c 'import Ice, omero.clients, importlib.metadata as m; print("install-omero: omero-py", m.version("omero-py"), "with Ice", Ice.stringVersion())'
