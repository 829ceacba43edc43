"""Data: datasets and their sources, images and colour, geometry, the preprocessing spec and inputs for ``infer``."""

from datamix_cli._compat import package_getattr

__getattr__ = package_getattr("data")  # the names of the 0.1 module data, for one release
