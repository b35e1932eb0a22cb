"""FID / KID / IS through torch-fidelity, sharded over ranks, and the feature extractors they use."""
