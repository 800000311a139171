"""Where and how the engine runs: devices, distributed training, memory checks, stop signals."""
