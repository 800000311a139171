"""Tiled, blended denoising of whole stacks, in memory or streamed to a file."""
