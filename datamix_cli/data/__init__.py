"""Data: datasets and their sources, images and colour, geometry, the preprocessing spec and inputs for ``infer``."""
