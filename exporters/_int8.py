"""What the int8 edge formats share: capability data the export loop reads, and the calibration they need."""

from __future__ import annotations

from pathlib import Path

from datamix_cli.errors import ExportFailedError


class Int8EdgePart:
    """Mixed in before a format's exporter: int8 parts are verified by the edge chain's top-1 agreement with
    PyTorch (at least ``min_agreement``), not per artifact by a tolerance, and are calibrated by the caller."""

    default_atol = 1e9  # not gated per artifact: see verification
    roles = ("head", "tail")
    verification = "agreement"
    min_agreement = 0.99
    needs_calibration = True

    @staticmethod
    def check_calibration(calibration, path: Path) -> None:
        if not calibration:
            raise ExportFailedError(f"int8 export of {path.name} needs calibration inputs")
