"""Time-lapse stacks in and out: TIFF/zarr reading, lazy TIFF arrays, axes, atomic output files.

The data flow through the modules in this order:

- :mod:`.read` - :func:`read_stack` opens a file as a lazy ``(T, Y, X)`` array after checking it
  is a complete TIFF (or a zarr array); :func:`expand_inputs` turns folders into their TIFFs;
- :mod:`.tiffarray` - :class:`TiffArray`, the lazy array over uncompressed pixels (positioned
  reads, no memory map);
- :mod:`.axes` - :func:`as_timelapse` makes any array ``(T, Y, X)``: axes, channel, dtype;
- :mod:`.write` - :func:`write_stack` / :func:`output_stack` write results, never partially;
- :mod:`.metadata` - the provenance JSON every output carries, :func:`read_metadata`;
- :mod:`.atomic` - :func:`atomic_file` and the folder / disk-space checks made before writing;
- :mod:`.outputs` - every output location of a run checked before the run starts;
- :mod:`.rois`, :mod:`.samples` - ROI files and the sample-data locations.
"""

from .atomic import atomic_file, format_bytes
from .axes import AXIS_LETTERS, MIN_FRAMES, NATIVE_DTYPES, as_timelapse, check_axes
from .metadata import METADATA_KEY, read_metadata
from .read import expand_inputs, looks_like_text, read_stack
from .tiffarray import TiffArray
from .write import BIGTIFF_BYTES, output_stack, to_output_dtype, write_stack

__all__ = [
    "AXIS_LETTERS",
    "BIGTIFF_BYTES",
    "METADATA_KEY",
    "MIN_FRAMES",
    "NATIVE_DTYPES",
    "TiffArray",
    "as_timelapse",
    "atomic_file",
    "check_axes",
    "expand_inputs",
    "format_bytes",
    "looks_like_text",
    "output_stack",
    "read_metadata",
    "read_stack",
    "to_output_dtype",
    "write_stack",
]
