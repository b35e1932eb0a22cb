"""gandist: GAN training on many GPUs or CPU ranks, with streaming data and experiment tracking."""

__version__ = "0.1.0"
