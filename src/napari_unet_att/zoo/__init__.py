"""BioImage Model Zoo (bioimage.io) packages of our models: export them, import them back.

- :mod:`.package`: the files and description a package holds (weights, architecture source,
  test tensors, cover, metadata) and the tile geometry of an exported model;
- :mod:`.readme`: the package's documentation text;
- :mod:`.export`: :func:`export_bioimageio`, one validated ``.zip`` written atomically;
- :mod:`.load`: :func:`load_package` and :func:`is_package`, reading a package of ours back
  without ``bioimageio.spec`` and without unpickling.

No Qt / napari here: the CLI (``export --format bioimageio``) and the widgets call these functions.
"""

from .export import export_bioimageio
from .load import is_package, load_package
from .package import (
    CITATIONS,
    CONFIG_KEY,
    DEFAULT_MIN_SIZE,
    PACKAGE_FORMAT,
    build_description,
    default_sample,
    engine_output,
    test_input,
    tile_geometry,
)

__all__ = [
    "CITATIONS",
    "CONFIG_KEY",
    "DEFAULT_MIN_SIZE",
    "PACKAGE_FORMAT",
    "build_description",
    "default_sample",
    "engine_output",
    "export_bioimageio",
    "is_package",
    "load_package",
    "test_input",
    "tile_geometry",
]
