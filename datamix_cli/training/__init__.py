"""Mixing-aware fine-tuning: the mixed forward, the loop, the adversary, evaluation, devices and torchrun."""

from datamix_cli._compat import package_getattr

__getattr__ = package_getattr("training")  # the names of the 0.1 module training, for one release
