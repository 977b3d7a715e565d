"""Build the OME-XML of a converted image with ome-types (tifffile's own writer has no Instrument)."""
from __future__ import annotations

from datetime import UTC

import numpy as np
from ome_types import model, to_xml

from converters.base import SourceImage
from converters.meta import clean

MAP_NAMESPACE = "openmicroscopy.org/omero/client/mapAnnotation"
_PIXEL_TYPES = {
    "u1": "uint8", "i1": "int8", "u2": "uint16", "i2": "int16", "u4": "uint32", "i4": "int32",
    "f4": "float", "f8": "double",
}


def ome_xml(image: SourceImage, microscope: str | None, name: str, nplanes: int) -> str:
    """OME-XML for one image whose planes are the file's first `nplanes` IFDs in XYZCT order."""
    instrument = model.Instrument(id="Instrument:0")
    if microscope:
        instrument.microscope = model.Microscope(model=clean(microscope))
    per_channel = [clean(d) for d in image.channel_detectors]
    if not per_channel and image.detector:
        per_channel = [clean(image.detector)] * len(image.channels)
    detectors = list(dict.fromkeys(d for d in per_channel if d))
    instrument.detectors = [model.Detector(id=f"Detector:{i}", model=d) for i, d in enumerate(detectors)]

    channels = []
    for c, channel_name in enumerate(image.channels):
        channel = model.Channel(id=f"Channel:0:{c}", name=clean(channel_name), samples_per_pixel=1)
        if c < len(per_channel) and per_channel[c]:
            channel.detector_settings = model.DetectorSettings(id=f"Detector:{detectors.index(per_channel[c])}")
        channels.append(channel)

    size = image.pixel_size
    pixels = model.Pixels(
        id="Pixels:0", dimension_order="XYZCT", type=_PIXEL_TYPES[np.dtype(image.dtype).str[1:]],
        size_x=image.shape["X"], size_y=image.shape["Y"], size_z=image.shape["Z"],
        size_c=image.shape["C"], size_t=image.shape["T"], big_endian=False,
        channels=channels,
        tiff_data_blocks=[model.TiffData(ifd=0, plane_count=nplanes)],
    )
    if size is not None:
        pixels.physical_size_x, pixels.physical_size_x_unit = size.x, size.unit
        pixels.physical_size_y, pixels.physical_size_y_unit = size.y, size.unit
        if size.z is not None:
            pixels.physical_size_z, pixels.physical_size_z_unit = size.z, size.unit
    if image.time_increment and image.time_increment > 0 and image.shape["T"] > 1:
        pixels.time_increment, pixels.time_increment_unit = image.time_increment, "s"

    annotation = model.MapAnnotation(
        id="Annotation:0", namespace=MAP_NAMESPACE,
        value=model.Map(ms=[model.Map.M(k=clean(k), value=clean(v)) for k, v in image.metadata.items()]),
    )
    ome_image = model.Image(
        id="Image:0", name=name, pixels=pixels,
        instrument_ref=model.InstrumentRef(id=instrument.id),
        annotation_refs=[model.AnnotationRef(id=annotation.id)],
    )
    if image.acquired is not None:
        # xsd:dateTime with the offset; OMERO stores the instant, so UTC loses nothing
        ome_image.acquisition_date = image.acquired.astimezone(UTC)
    ome = model.OME(
        creator="omero-upload-portal converters", images=[ome_image], instruments=[instrument],
        structured_annotations=model.StructuredAnnotations(map_annotations=[annotation]),
    )
    return to_xml(ome, indent=0)
