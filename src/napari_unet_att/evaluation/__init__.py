"""Metrics, baseline filters and the two-photon simulator used to score denoising."""
