"""napari-unet-att: self-supervised UNet-Att denoising of two-photon calcium-imaging time-lapses.

The engine (``config``, ``io``, ``pairs``, ``networks``, ``train``, ``infer``, ``checkpoint``,
``metrics``, ``simulate``) works without Qt or napari; the ``_widget``/``_reader``/``_writer``/
``_sample_data`` modules are the napari plugin. Importing the package itself is cheap.
"""

__version__ = "0.1.0"
