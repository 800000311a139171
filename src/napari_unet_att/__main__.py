"""``python -m napari_unet_att``: the same CLI as the ``napari-unet-att`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
