"""Format plugins that turn microscope files into OME-TIFF, or pass OME-TIFF and CZI through.

The grouping rule (converters.grouping) is pure Python and imported eagerly; the readers need numpy and
friends and load on first use, so the light client (app.client) can group files without them.
"""
from importlib import import_module

from converters.grouping import FileGroup, group_files

_LAZY = {"Conversion": "converters.base", "ConversionError": "converters.base", "ConvertOptions": "converters.base",
         "OutputImage": "converters.base", "PixelSize": "converters.base", "convert": "converters.registry"}

__all__ = ["FileGroup", "group_files", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")
