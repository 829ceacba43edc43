"""datamix: privacy-preserving edge-cloud inference (DataMix, ECCV 2020).

Kept import-light on purpose: the CLI must start without importing torch.
"""

__version__ = "0.1.0"

from datamix_cli import _compat

_compat.install()  # the 0.1 flat module paths, for one release (datamix_cli/_compat.py)
