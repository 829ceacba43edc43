"""Every error datamix reports to a user.

The CLI catches :class:`DatamixError` in one place, prints its message as one
line and exits with :data:`EXIT_USER_ERROR`. Anything else is a bug.
"""

EXIT_USER_ERROR = 2


class DatamixError(Exception):
    """Base of every error caused by user input or environment."""


class InputFileError(DatamixError):
    """A file or folder the user named is missing or unreadable."""


class ModelSpecError(DatamixError):
    """A model specification is malformed or names nothing loadable."""


class WeightsMismatchError(DatamixError):
    """A state_dict does not fit the model built by the factory."""


class UntrustedPickleError(DatamixError):
    """Loading the file would unpickle arbitrary code without --trust-pickle."""


class TraceError(DatamixError):
    """The model cannot be traced into a graph datamix can cut."""


class InputShapeError(DatamixError):
    """The input shape or the data does not fit the model."""


class CutError(DatamixError):
    """A cut name is unknown or the pair of cuts is not a valid split."""


class BudgetError(DatamixError):
    """The edge FLOPs budget is out of range or cannot be met."""


class ConfigError(DatamixError):
    """An option value is out of range or inconsistent with another."""


class ProtocolError(DatamixError):
    """Mixing parameters are out of range or cannot be satisfied."""


class DatasetError(DatamixError):
    """A dataset is unknown, malformed or does not fit the model."""


class MissingExtraError(DatamixError):
    """An optional dependency is not installed; the message names the pip extra."""


class ExporterRegistryError(DatamixError):
    """An exporter name is registered twice or not at all."""


class AttackRegistryError(DatamixError):
    """An attack name is registered twice or not at all."""


class ExportFailedError(DatamixError):
    """A converter could not turn a part into its format."""


class VerificationError(DatamixError):
    """An artifact's outputs differ from the PyTorch part beyond tolerance."""


class NearChanceError(DatamixError):
    """The original model scores near chance on the data: fine-tuning it would produce garbage."""


class TrainingDivergedError(DatamixError):
    """Fine-tuning's loss became NaN/Inf or exploded."""


class ManifestError(DatamixError):
    """A split folder's manifest is missing, invalid, of an unknown version, or tampered with."""


class OutputDirError(DatamixError):
    """The output folder exists (without --force) or cannot be written."""


class ServerError(DatamixError):
    """The cloud server could not be reached or refused a request."""


class LoopbackError(DatamixError):
    """The loopback server did not start or stopped unexpectedly."""


def require(module: str, extra: str):
    """Import an optional dependency, or fail naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module} is not installed ({exc}); install it with: pip install 'datamix[{extra}]'"
        ) from exc
