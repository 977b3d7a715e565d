"""MRC and MRCS without an EPU XML, and Direct Electron movies with their _info.txt. Values checked
against mrcfile and RosettaSciIO's reader of DE info files, never against what we wrote."""
from __future__ import annotations

import warnings
from datetime import UTC, datetime

import mrcfile
import numpy as np
import pytest
import tifffile

from converters import ConversionError, ConvertOptions, convert, group_files
from tests.helpers import sample


def header(path) -> tuple[np.ndarray, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Map ID string not found": the reason to be permissive
        with mrcfile.open(path, permissive=True) as m:
            return m.data.copy(), m.voxel_size.copy()


def de_info(name: str) -> dict:
    """The info file's "key = value" lines, split as RosettaSciIO's read_de_metadata_file splits them (which
    itself refuses these random-scan samples without their scan_coordinates.csv)."""
    lines = sample(name).read_text(encoding="utf-8").splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in lines)}


def test_mrc_alone_with_a_real_voxel_size(tmp_path, check_output):
    result = convert([sample("temp.mrc")], tmp_path, ConvertOptions())
    data, voxel = header(sample("temp.mrc"))
    assert float(voxel.x) == 2.0  # Å, as the header says
    assert result.status == "converted" and result.shape == {"T": 3, "C": 1, "Z": 1, "Y": 128, "X": 128}
    assert np.array_equal(tifffile.imread(result.output), data)
    assert (result.pixel_size.x, result.pixel_size.y, result.pixel_size.unit) == (200.0, 200.0, "pm")
    assert result.warnings == ["acquisition date unknown", "microscope unknown"]
    check_output(result)


def test_negative_header_voxel_size_is_unknown(tmp_path, check_output):
    result = convert([sample("20241021_00405_final.mrc")], tmp_path, ConvertOptions())
    data, voxel = header(sample("20241021_00405_final.mrc"))
    assert voxel.x < 0
    assert np.array_equal(tifffile.imread(result.output), data.reshape(4, 8))
    assert result.pixel_size is None and "pixel size unknown" in result.warnings
    check_output(result)


@pytest.mark.parametrize("voxel, expected", [(0.0, None), (1.0, None), (-3.0, None), (1.5, 150.0)])
def test_only_a_real_header_voxel_size_is_a_pixel_size(tmp_path, voxel, expected):
    path = tmp_path / "stack.mrcs"  # an image stack (RELION's name for them)
    with mrcfile.new(path) as m:
        m.set_data(np.arange(2 * 8 * 12, dtype=np.float32).reshape(2, 8, 12))
        m.voxel_size = voxel
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.shape["T"] * result.shape["Z"] == 2
    if expected is None:  # 0, negative and the uncalibrated 1 Å default say nothing
        assert result.pixel_size is None and "pixel size unknown" in result.warnings
    else:
        assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(expected), "pm")


def test_header_that_lies_about_its_size_is_refused_by_name(tmp_path):
    path = tmp_path / "temp.mrc"
    path.write_bytes(sample("temp.mrc").read_bytes()[:1024 + 128 * 128 * 4])
    with pytest.raises(ConversionError, match=r"^temp\.mrc is truncated: header says 3 sections of 128x128 float32 "
                                              r"\(196608 bytes\), file holds 65536 bytes"):
        convert([path], tmp_path / "out", ConvertOptions())


@pytest.mark.parametrize("movie, info, frames", [
    ("Custom_movie.mrc", "Custom_info.txt", 30),
    ("ROI_Random_Scan_movie.mrc", "ROI_Random_Scan_info.txt", 348),
])
def test_direct_electron_movie_with_its_info_keeps_every_frame(tmp_path, check_output, movie, info, frames):
    result = convert([sample(movie), sample(info)], tmp_path, ConvertOptions())
    data, _ = header(sample(movie))
    facts = de_info(info)
    assert result.shape == {"T": frames, "C": 1, "Z": 1, "Y": 16, "X": 16} and len(data) == frames
    assert np.array_equal(tifffile.imread(result.output), data)
    assert result.acquired == datetime.fromtimestamp(int(facts["Timestamp (seconds since Epoch)"]), UTC)
    assert result.microscope == facts["Camera Model"] == "DESim" and result.detector == "DESim"
    assert facts["Specimen Pixel Size X (nanometers)"] == facts["Diffraction Pixel Size X"] == "-1"
    assert result.pixel_size is None and result.warnings == ["pixel size unknown"]
    assert result.metadata["DE.Scan - Points"] == facts["Scan - Points"]
    check_output(result)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_de_info_cut_inside_a_line_imports_with_a_warning_that_says_so(tmp_path, share):
    """The info file has no length or closing line: cut short, the movie converted with whatever keys
    were left, and nothing said why the camera or date went missing."""
    data = sample("Custom_info.txt").read_bytes()
    cut = data[:int(len(data) * share)]
    assert not cut.endswith(b"\n")
    (tmp_path / "Custom_info.txt").write_bytes(cut)
    result = convert([sample("Custom_movie.mrc"), tmp_path / "Custom_info.txt"], tmp_path / "out", ConvertOptions())
    assert result.shape["T"] == 30
    assert "Custom_info.txt ends inside a line: it may be cut short, and what followed is missing" in result.warnings


def _info(tmp_path, **changes) -> str:
    return write_info(tmp_path / "Custom_info.txt", **changes)


def write_info(path, **changes):
    """Custom_info.txt as `path`, with some values changed (the sample's pixel sizes are -1, unset)."""
    text = sample("Custom_info.txt").read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {changes[key]}" if key in changes else line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def de_acquisition(folder, **changes) -> dict[str, object]:
    """A DE acquisition folder: the sample movie, its _final sum (16x16, the movie's frames summed), a
    virtual image of the 5x5 scan and the info file; returns each MRC's pixels as mrcfile reads them."""
    folder.mkdir()
    movie = folder / "Custom_movie.mrc"
    movie.write_bytes(sample("Custom_movie.mrc").read_bytes())
    frames, _ = header(movie)
    made = {"Custom_final.mrc": frames.sum(axis=0, dtype=np.float32), "Custom_0_HAADF_sum.mrc":
            np.arange(25, dtype=np.float32).reshape(5, 5)}
    for name, data in made.items():
        with mrcfile.new(folder / name) as m:
            m.set_data(data)
    write_info(folder / "Custom_info.txt", **changes)
    return {"Custom_movie.mrc": frames, **made}


def test_de_tem_movie_takes_the_specimen_pixel_size(tmp_path):
    info = _info(tmp_path, **{"Scan - Enable": "Disable", "Instrument Project TEMorSTEM Mode": "0",
                              "Specimen Pixel Size X (nanometers)": "0.25", "Specimen Pixel Size Y (nanometers)": "0.25",
                              "Frames Per Second": "40"})
    result = convert([sample("Custom_movie.mrc"), info], tmp_path / "out", ConvertOptions())
    assert (result.pixel_size.x, result.pixel_size.unit) == (250.0, "pm") and result.warnings == []
    assert result.pixel_size is not None
    with tifffile.TiffFile(result.output) as tif:  # 40 frames a second: 25 ms apart
        assert 'TimeIncrement="0.025"' in tif.pages.first.description


def test_de_4dstem_frames_are_diffraction_patterns(tmp_path, check_output):
    info = _info(tmp_path, **{"Diffraction Pixel Size X": "0.02", "Diffraction Pixel Size Y": "0.02",
                              "Specimen Pixel Size X (nanometers)": "1.5", "Specimen Pixel Size Y (nanometers)": "1.5"})
    result = convert([sample("Custom_movie.mrc"), info], tmp_path / "out", ConvertOptions())
    # a scan's frames are diffraction patterns: reciprocal space, kept as a calibration, never a pixel size
    assert result.pixel_size is None and result.metadata["Calibration X"] == "0.02 1/nm"
    assert "pixel size unknown" not in result.warnings
    assert result.metadata["DE.Specimen Pixel Size X (nanometers)"] == "1.5"  # the scan step, kept as given
    check_output(result)


def test_de_info_without_its_images_is_refused_by_name(tmp_path):
    with pytest.raises(ConversionError, match=r"^Custom_info\.txt is a Direct Electron info file: it needs its "
                                              r"images \(Custom_movie\.mrc or another Custom_\*\.mrc\)"):
        convert([sample("Custom_info.txt")], tmp_path, ConvertOptions())


def test_every_mrc_of_a_de_acquisition_takes_its_info(tmp_path):
    """One info file, three images: the movie's frames and their sum are diffraction patterns of the
    scan, the virtual image is the scan itself (its pixel is the scan's step)."""
    folder = tmp_path / "session"
    pixels = de_acquisition(folder, **{"Diffraction Pixel Size X": "0.02", "Diffraction Pixel Size Y": "0.02",
                                       "Specimen Pixel Size X (nanometers)": "1.5",
                                       "Specimen Pixel Size Y (nanometers)": "2.5"})
    facts = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in
                                                   (folder / "Custom_info.txt").read_text().splitlines())}
    groups = group_files(sorted(p.relative_to(tmp_path).as_posix() for p in folder.iterdir()))
    assert [g.files for g in groups] == [[f"session/{n}", "session/Custom_info.txt"] for n in sorted(pixels)]
    results = {}
    for g in groups:
        name = g.files[0].split("/")[1]
        results[name] = convert([tmp_path / f for f in g.files], tmp_path / "out" / name, ConvertOptions())
        assert np.array_equal(tifffile.imread(results[name].output).reshape(pixels[name].shape), pixels[name])
    when = datetime.fromtimestamp(int(facts["Timestamp (seconds since Epoch)"]), UTC)
    for name, result in results.items():
        assert (result.acquired, result.microscope, result.detector) == (when, facts["Camera Model"], "DESim"), name
        assert result.metadata["DE.Scan - Size X"] == facts["Scan - Size X"] == "5"
    for name in ("Custom_movie.mrc", "Custom_final.mrc"):  # camera frames of a scan: reciprocal space
        assert results[name].pixel_size is None and results[name].warnings == []
        assert results[name].metadata["Calibration X"] == f"{float(facts['Diffraction Pixel Size X']):g} 1/nm"
    virtual = results["Custom_0_HAADF_sum.mrc"]
    assert (virtual.pixel_size.x, virtual.pixel_size.y, virtual.pixel_size.unit) == (
        float(facts["Specimen Pixel Size X (nanometers)"]), float(facts["Specimen Pixel Size Y (nanometers)"]), "nm")
    assert "Calibration X" not in virtual.metadata and virtual.warnings == []


def test_every_mrc_of_a_de_tem_acquisition_takes_its_pixel_size(tmp_path):
    folder = tmp_path / "tem"
    de_acquisition(folder, **{"Scan - Enable": "Disable", "Instrument Project TEMorSTEM Mode": "0",
                              "Specimen Pixel Size X (nanometers)": "0.25", "Specimen Pixel Size Y (nanometers)": "0.25"})
    for name in ("Custom_movie.mrc", "Custom_final.mrc"):
        result = convert([folder / name, folder / "Custom_info.txt"], tmp_path / name, ConvertOptions())
        assert (result.pixel_size.x, result.pixel_size.unit) == (250.0, "pm") and result.warnings == []
