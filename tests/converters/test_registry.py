"""The registry: plugins found by scanning the formats package, formats told apart by content."""
from __future__ import annotations

import textwrap

import pytest

from converters import ConversionError, ConvertOptions, convert, formats, registry
from tests.converters.conftest import sample


def test_every_format_module_is_found():
    names = {p.NAME for p in registry.plugins()}
    assert names == {
        "Velox EMD", "Berkeley EMD", "TIA EMI", "TIA SER", "MRC", "ATLAS/EPU XML", "Zeiss SEM TIFF",
        "Thermo Fisher/FEI SEM TIFF", "OME-TIFF", "Zeiss CZI", "Gatan DigitalMicrograph",
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
    from converters.grouping import SUPPORTED_SUFFIXES

    for plugin in registry.plugins():
        assert set(plugin.EXTENSIONS) <= set(SUPPORTED_SUFFIXES), plugin.NAME
