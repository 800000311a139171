"""Reading and writing time-lapse stacks: TIFF/zarr input, lazy TIFF arrays, axes, atomic output files."""
