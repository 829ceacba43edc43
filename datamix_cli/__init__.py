"""datamix: privacy-preserving edge-cloud inference (DataMix, ECCV 2020).

Kept import-light on purpose: the CLI must start without importing torch.
"""

__version__ = "0.1.0"
