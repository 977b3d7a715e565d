"""Spectra kept beside the images: a CSV of the values and a PNG plot a researcher can look at in OMERO.web.

A file that holds spectra but no image still needs an OMERO image to hang them on: `plot_image` makes
that image from the plot itself (red, green and blue as three 8-bit channels).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from converters.base import Attachment, SourceImage, Spectrum
from converters.planes import FuncPlane

PLOT_INCHES, PLOT_DPI = (8, 4.5), 100  # an 800x450 plot reads well in OMERO.web's attachment preview


def energies(spectrum: Spectrum) -> np.ndarray:
    """The energy of each channel, or the channel index when the file gives no calibration."""
    index = np.arange(len(spectrum.counts), dtype=np.float64)
    return index if not spectrum.unit else spectrum.offset + spectrum.scale * index


def axis_label(spectrum: Spectrum) -> str:
    return f"energy ({spectrum.unit})" if spectrum.unit else "channel"


def write(spectrum: Spectrum, base: Path) -> list[Attachment]:
    """Write base.csv and base.png for one spectrum; return them as attachments."""
    csv_path, png_path = base.with_name(base.name + ".csv"), base.with_name(base.name + ".png")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow([axis_label(spectrum), "counts"])
        for energy, count in zip(energies(spectrum).tolist(), np.asarray(spectrum.counts).tolist()):
            out.writerow([repr(energy) if spectrum.unit else int(energy), count])
    _figure(spectrum).savefig(png_path, dpi=PLOT_DPI)
    return [Attachment(csv_path, "spectrum-csv", f"{spectrum.title} spectrum (CSV)"),
            Attachment(png_path, "spectrum-plot", f"{spectrum.title} spectrum (plot)")]


def plot_image(spectrum: Spectrum) -> SourceImage:
    """The spectrum's plot as an image (channels red, green, blue), for a file that has no image."""
    figure = _figure(spectrum)
    figure.set_dpi(PLOT_DPI)
    figure.canvas.draw()
    rgb = np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    ny, nx, _ = rgb.shape
    planes = [FuncPlane((ny, nx), np.dtype("u1"), lambda y0, y1, c=c: rgb[y0:y1, :, c]) for c in range(3)]
    return SourceImage(
        shape={"T": 1, "C": 3, "Z": 1, "Y": ny, "X": nx}, dtype=np.dtype("u1"), planes=lambda: iter(planes),
        channels=["red", "green", "blue"], title=None,
    )


def _figure(spectrum: Spectrum):
    # imported here: a second of start-up that conversions without spectra need not pay. The object
    # API with the Agg canvas keeps no pyplot state and needs no display on workers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PLOT_INCHES, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(energies(spectrum), spectrum.counts, linewidth=0.8, color="#1f4e9c")
    axes.set_xlabel(axis_label(spectrum))
    axes.set_ylabel("counts")
    axes.set_title(spectrum.title)
    return figure
