"""Sampling from exported HF checkpoints: text-to-image with classifier-free guidance, captioning, text."""
