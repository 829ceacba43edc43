"""What the reduced-precision edge formats (int8, fp16) share: capability data the export loop reads."""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError


class ReducedPrecisionPart:
    """Mixed in before a format's exporter: the part's outputs differ from PyTorch by design, so it is verified by
    the edge chain's top-1 agreement with PyTorch (at least ``min_agreement``), not per artifact by a tolerance."""

    default_atol = 1e9  # not gated per artifact (only a non-finite output fails there): see verification
    roles = ("head", "tail")
    verification = "agreement"
    min_agreement = 0.99
    needs_calibration = False


class Int8EdgePart(ReducedPrecisionPart):
    """int8 parts are also calibrated: the caller passes inputs as the protocol feeds them."""

    needs_calibration = True

    @staticmethod
    def check_calibration(calibration, path: Path) -> None:
        if not calibration:
            raise ExportFailedError(f"int8 export of {path.name} needs calibration inputs")


class Fp16EdgePart(ReducedPrecisionPart):
    """fp16 parts halve the weights' bytes; nothing to calibrate."""
