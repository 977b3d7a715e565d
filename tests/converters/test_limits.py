"""The shared bounds of converters/limits.py, checked against numpy and h5py directly."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from converters import ConversionError, ConvertOptions, convert
from converters.limits import MAX_XML_DEPTH, blocks, check_h5, parse_xml
from converters.meta import fresh_key
from tests.converters import hostile_files


@pytest.mark.parametrize("shape, budget", [((10,), 3), ((7, 5), 11), ((3, 40, 7), 20), ((2, 3, 4, 5), 1), ((4, 6), 1000)])
def test_blocks_cover_every_element_once_within_the_budget(shape, budget):
    seen = np.zeros(shape, np.int64)
    for index in blocks(shape, budget):
        selected = seen[index]
        assert selected.size <= max(budget, shape[-1])
        seen[index] += 1
    assert (seen == 1).all()


def test_fresh_key_numbers_repeats_in_linear_steps():
    out, seen = {"a (2)": ""}, {}
    for _ in range(4):
        out[fresh_key("a", out, seen)] = ""
    assert list(out) == ["a (2)", "a", "a (3)", "a (4)", "a (5)"]


def test_parse_xml_keeps_real_xml_and_bounds_depth():
    root = parse_xml(b"<r><a x='1'>t</a><a/></r>", "x.xml")
    assert [c.tag for c in root] == ["a", "a"] and root[0].get("x") == "1" and root[0].text == "t"
    deep = "<a>" * (MAX_XML_DEPTH + 1) + "</a>" * (MAX_XML_DEPTH + 1)
    with pytest.raises(ConversionError, match=rf"^x\.xml: its metadata XML nests more than {MAX_XML_DEPTH} levels"):
        parse_xml(deep, "x.xml")
    parse_xml("<a>" * MAX_XML_DEPTH + "</a>" * MAX_XML_DEPTH, "x.xml")


def test_check_h5_compares_with_the_chunks_h5py_stores(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        written = f.create_dataset("w", data=np.random.default_rng(0).integers(0, 2**16, (4096, 4096), np.uint16),
                                   chunks=(512, 512))
        sparse = f.create_dataset("s", shape=(65536, 65536), dtype=np.uint16, chunks=(512, 512))
        sparse[:512, :512] = 1
        assert sparse.id.get_storage_size() == 512 * 512 * 2  # one chunk: what the check compares with
        check_h5(written, "x.h5", "pixels")
        with pytest.raises(ConversionError, match=r"^x\.h5 declares 8\.6 GB of pixels in 524\.3 KB of stored data"):
            check_h5(sparse, "x.h5", "pixels")
        assert math.prod(sparse.shape) * 2 == 8_589_934_592


def test_data_stored_outside_the_upload_is_never_read(tmp_path):
    files = hostile_files.berkeley_external(tmp_path)
    with pytest.raises(ConversionError, match=r"^x\.emd: /data/image/data keeps its data outside the "
                                              r"file \(HDF5 external storage or a virtual dataset\); refused"):
        convert(files, tmp_path / "out", ConvertOptions())
