"""The networks (UNet-Att, 3D UNet), the Denoiser that pairs one with its normalisation, and model files."""
