"""Self-supervised training: patch pairs from a stack, the Trainer, pretraining and step timing."""
