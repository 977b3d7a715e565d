"""Units: every spelling files use for a length or a reciprocal length, and nothing guessed."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from converters.meta import calibration, from_filetime, per_nm, unknowns


@pytest.mark.parametrize("unit", ["1/nm", "1 / nm", "nm^-1", "nm-1", "nm⁻¹", " 1/nm "])
def test_reciprocal_nanometre_spellings(unit):
    assert per_nm(0.5, unit) == pytest.approx(0.5)


@pytest.mark.parametrize("value, unit, expected", [(4.2464134e7, "1/meters", 0.042464134), (0.5, "1/Å", 5.0),
                                                   (0.5, "1/A", 5.0), (3.0, "µm^-1", 0.003), (1.0, "1/m", 1e-9)])
def test_reciprocal_lengths_in_per_nm(value, unit, expected):
    assert per_nm(value, unit) == pytest.approx(expected)


@pytest.mark.parametrize("unit", ["nm", "eV", "1/eV", "1/s", "", "px", "units1", "1/"])
def test_not_a_reciprocal_length(unit):
    assert per_nm(1.0, unit) is None


def test_diffraction_calibration_is_never_a_pixel_size():
    """The TIA diffraction pattern that became a 42,464,134 m pixel: its calibration is 1/m."""
    cal = calibration((4.2464134e7, "1/meters"), (4.2464134e7, "1/meters"))
    assert cal.pixel_size is None and cal.known
    assert cal.metadata == {"Calibration X": "0.0424641 1/nm", "Calibration Y": "0.0424641 1/nm"}


@pytest.mark.parametrize("unit, metres", [("nm", 1e-9), ("nanometers", 1e-9), ("µm", 1e-6), ("μm", 1e-6), ("um", 1e-6),
                                          ("microns", 1e-6), ("Å", 1e-10), ("\u212b", 1e-10), ("A", 1e-10),
                                          ("pm", 1e-12), ("meters", 1.0), ("m", 1.0)])
def test_length_spellings(unit, metres):
    assert calibration((2.0, unit), (2.0, unit)).pixel_size == calibration((2 * metres, "m"), (2 * metres, "m")).pixel_size


def test_lengths_of_different_units_per_axis():
    cal = calibration((1.0, "nm"), (2.0, "A"))
    assert (cal.pixel_size.x, cal.pixel_size.y, cal.pixel_size.unit) == (1.0, 0.2, "nm") and cal.known


@pytest.mark.parametrize("x, y", [((1.0, "px"), (1.0, "px")), ((-1.0, "nm"), (-1.0, "nm")), ((0.0, "nm"), (0.0, "nm")),
                                  ((1.0, "nm"), (1.0, "1/nm")), ((1.0, "furlong"), (1.0, "furlong"))])
def test_unknown_or_mixed_units_are_not_guessed(x, y):
    cal = calibration(x, y)
    assert cal.pixel_size is None and not cal.known
    assert cal.metadata["Calibration X"] == f"{x[0]:g} {x[1]}"


def test_filetime_is_utc_and_out_of_range_is_none():
    # 1.3309980037321494e17 ticks of 100 ns since 1601 (a GMS DataBar value): 2022-10-11 16:40:37 UTC
    assert from_filetime(1.3309980037321494e17).replace(microsecond=0) == datetime(2022, 10, 11, 16, 40, 37,
                                                                                    tzinfo=UTC)
    assert from_filetime(0) is None and from_filetime(float("nan")) is None and from_filetime("x") is None


def test_unknowns_word_for_word():
    assert unknowns(None, None, False) == ["acquisition date unknown", "microscope unknown", "pixel size unknown"]
    assert unknowns(datetime.now(UTC), "Talos", True) == []

