"""The registry: plugins found by scanning the formats package, formats told apart by content."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from converters import ConversionError, ConvertOptions, convert, formats, registry
from tests.helpers import sample


def test_every_format_module_is_found():
    names = {p.NAME for p in registry.plugins()}
    assert names == {
        "Velox EMD", "Berkeley EMD", "TIA EMI", "TIA SER", "MRC", "ATLAS/EPU XML", "Zeiss SEM TIFF",
        "Thermo Fisher/FEI SEM TIFF", "OME-TIFF", "Zeiss CZI", "Gatan DigitalMicrograph", "TIFF",
        "Direct Electron info", "Bruker Esprit", "EDAX spectrum", "EDAX map", "EMSA/MSA spectrum", "HDF5",
    }


def test_a_new_format_is_a_new_module_and_nothing_else(tmp_path, monkeypatch):
    (tmp_path / "pgm_image.py").write_text(textwrap.dedent('''
        import numpy as np
        from converters.base import SourceImage
        from converters.planes import FuncPlane
        NAME, EXTENSIONS = "PGM", (".pgm",)
        def identify(head, path):
            return head.startswith(b"P5")
        def read(files, options):
            width, height = 3, 2
            plane = FuncPlane((height, width), np.dtype("u1"), lambda y0, y1: np.full((y1 - y0, width), 7, "u1"))
            return SourceImage(shape={"T": 1, "C": 1, "Z": 1, "Y": height, "X": width}, dtype=np.dtype("u1"),
                               planes=lambda: iter([plane]), channels=["grey"])
    '''))
    monkeypatch.setattr(formats, "__path__", [*formats.__path__, str(tmp_path)])
    registry.plugins.cache_clear()
    try:
        image = tmp_path / "x.pgm"
        image.write_bytes(b"P5 3 2 255\n" + b"\7" * 6)
        result = convert([image], tmp_path / "out", ConvertOptions())
        assert result.status == "converted" and result.shape["X"] == 3 and result.channels == ["grey"]
    finally:
        registry.plugins.cache_clear()


@pytest.mark.parametrize("name, plugin", [
    ("fei_example_tem_stack.emd", "Velox EMD"),
    ("128x128_TEM_acquire-sum1.emi", "TIA EMI"),
    ("128x128_TEM_acquire-sum1_1.ser", "TIA SER"),
    ("temp.mrc", "MRC"),
    ("20241021_00405_final.mrc", "MRC"),
    ("Atlas_1.xml", "ATLAS/EPU XML"),
    ("test_tiff_Zeiss_SEM_1k.tif", "Zeiss SEM TIFF"),
    ("FEI-Helios-Ebeam-8bits.tif", "Thermo Fisher/FEI SEM TIFF"),
])
def test_samples_are_identified_by_content(name, plugin):
    assert registry.identify(sample(name)).NAME == plugin


def test_content_wins_over_a_lying_extension(tmp_path):
    lying = tmp_path / "really_an_emi.mrc"
    lying.write_bytes(sample("16x16_STEM_BF_DF_acquire.emi").read_bytes())
    with pytest.raises(ConversionError, match=r"^really_an_emi\.mrc is named \.mrc but its content is a TIA EMI file; "
                                              r"rename it to \.emi"):
        registry.identify(lying)


def test_unknown_extension_and_content(tmp_path):
    path = tmp_path / "notes.xyz"
    path.write_bytes(b"\x01\x02\x03 hello")
    with pytest.raises(ConversionError, match=r"^notes\.xyz is not in a format we read: its content starts with the "
                                              r"bytes 01 02 03 20"):
        convert([path], tmp_path / "out", ConvertOptions())


def test_plugins_only_claim_extensions_the_portal_accepts():
    from converters import declared

    for plugin in registry.plugins():
        assert set(plugin.EXTENSIONS) <= set(declared.suffixes()), plugin.NAME


def test_progress_is_told_over_every_image_and_ends_at_one(tmp_path):
    seen = []
    result = convert([sample("example_velox_EELS_EDS.emd")], tmp_path, ConvertOptions(progress=seen.append))
    assert len(result.images) == 2
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    # after the first image: its share of all pixel bytes (7x16x20 float32 of those plus 128x128 uint16)
    first, second = 7 * 16 * 20 * 4, 128 * 128 * 2
    assert pytest.approx(first / (first + second)) in seen


def test_warnings_name_the_image_they_concern(tmp_path):
    import h5py

    path = tmp_path / "two_shapes.emd"
    with h5py.File(sample("fei_example_tem_stack.emd")) as src, h5py.File(path, "w") as dst:
        for name in src:
            src.copy(name, dst)
        # a second image of another shape whose metadata says nothing about its pixel size
        key = next(iter(src["Data/Image"]))
        group = dst.create_group("Data/Image/f" + key[1:])  # after the first in key order
        group.create_dataset("Data", data=np.ones((4, 5, 1), np.uint16))
        meta = src[f"Data/Image/{key}/Metadata"][:, :1].copy()
        text = bytes(meta[:, 0]).rstrip(b"\0").replace(b'"PixelSize"', b'"NoPixelSize"')
        meta[:] = 0
        meta[:len(text), 0] = np.frombuffer(text, np.uint8)
        group.create_dataset("Metadata", data=meta)
    result = convert([path], tmp_path / "out", ConvertOptions())
    [other] = result.images[1:]
    assert result.warnings == [f"pixel size unknown ({other.title})"]
    assert other.path.name == f"two_shapes [{other.title}].ome.tiff" and other.pixel_size is None


def test_a_passthrough_lists_its_input_as_the_image(tmp_path):
    import tifffile

    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, np.zeros((2, 4, 5), np.uint8), ome=True, metadata={"axes": "CYX"})
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.status == "passthrough"
    assert [(i.path, i.title) for i in result.images] == [(path, None)]


def test_warm_up_imports_the_readers_plugins_load_only_when_reading():
    """A worker calls warm_up before its pool forks; a new reader a plugin imports lazily is named in
    its READERS, and this finds the ones named wrongly (a typo would fail the worker at start)."""
    import subprocess
    import sys

    code = ("import sys; from converters.registry import plugins, warm_up; warm_up(); "
            "named = {n for p in plugins() for n in getattr(p, 'READERS', ())}; "
            "print(sorted(named), all(n in sys.modules for n in named), 'dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("] ")[1].split() == ["True", "True"]
    assert "rsciio.emd" in out and "rsciio.digitalmicrograph" in out
