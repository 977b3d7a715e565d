"""Format plugins that turn microscope files into OME-TIFF, or pass OME-TIFF and CZI through."""
from converters.base import Conversion, ConversionError, ConvertOptions, OutputImage, PixelSize
from converters.grouping import FileGroup, group_files
from converters.registry import convert

__all__ = [
    "Conversion", "ConversionError", "ConvertOptions", "FileGroup", "OutputImage", "PixelSize", "convert", "group_files",
]
