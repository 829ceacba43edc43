"""Turning what a user names on the command line into an ``nn.Module``.

Three forms are accepted:

* ``path/to/file.py:factory`` or ``package.module:factory`` (plus optional
  ``weights``, a state_dict read with ``torch.load(weights_only=True)``);
* a ``torch.export`` archive (``.pt2``);
* a whole pickled ``nn.Module``, only with ``trust_pickle=True``, because
  unpickling runs arbitrary code from the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datamix_cli.errors import (
    InputFileError,
    ModelSpecError,
    UntrustedPickleError,
    WeightsMismatchError,
)
from partitioners.graph import eval_mode


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, as the user gave it."""

    spec: str
    weights: Path | None = None
    trust_pickle: bool = False
    factory_kwargs: dict = field(default_factory=dict)


def load_model(source: ModelSource):
    """Build the model named by ``source`` in eval mode."""
    spec = source.spec
    if spec.endswith(".pt2"):
        model = _load_exported(Path(spec))
    elif ":" in spec:
        model = _build_from_factory(spec, source.factory_kwargs)
    else:
        model = _load_pickled(Path(spec), source.trust_pickle)
    if source.weights is not None:
        if ":" not in spec:
            raise ModelSpecError("--weights applies only to a factory spec (file.py:factory or module:factory)")
        load_weights(model, source.weights)
    return eval_mode(model)


def _build_from_factory(spec: str, kwargs: dict):
    import torch

    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise ModelSpecError(f"malformed model spec {spec!r}: expected path/to/file.py:factory or package.module:factory")
    module = _import_target(target)
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelSpecError(f"factory {name!r} not found in {target}; callables there: {', '.join(found) or 'none'}")
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ModelSpecError(f"calling {spec} with {kwargs or 'no arguments'} failed: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_target(target: str):
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputFileError(f"model file not found: {path}")
        module_name = f"datamix_user_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # A model file may import its siblings; make them importable while it loads.
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelSpecError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.pop(0)
        return module
    if not all(part.isidentifier() for part in target.split(".")):
        raise ModelSpecError(f"malformed model spec {target!r}: not a .py file nor a dotted module name")
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ModelSpecError(f"cannot import module {target!r}: {exc}") from exc


def load_weights(model, path: Path) -> None:
    """Load a state_dict into ``model``, naming every key that does not fit."""
    import torch

    state = _torch_load(Path(path), weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(f"{path} is not a state_dict (a mapping of names to tensors)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong_shape)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsMismatchError(f"weights {path} do not fit the model: " + "; ".join(problems))
    model.load_state_dict(state)


def _load_exported(path: Path):
    import torch

    if not path.is_file():
        raise InputFileError(f"exported program not found: {path}")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelSpecError(f"{path} is not a readable torch.export archive: {exc}") from exc
    return program.module()


def _load_pickled(path: Path, trust_pickle: bool):
    import torch

    if not path.is_file():
        raise ModelSpecError(
            f"model spec {str(path)!r} is neither file.py:factory, module:factory, a .pt2 archive nor an existing file"
        )
    if not trust_pickle:
        raise UntrustedPickleError(
            f"{path} would be loaded as a pickled nn.Module, and unpickling runs arbitrary code from the file; "
            "pass --trust-pickle only if you trust its author, or use file.py:factory --weights / a .pt2 archive"
        )
    model = _torch_load(path, weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{path} holds a {type(model).__name__}, not a pickled torch.nn.Module")
    return model


def _torch_load(path: Path, weights_only: bool):
    import pickle

    import torch

    if not path.is_file():
        raise InputFileError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise UntrustedPickleError(f"{path} is not a plain state_dict ({first_line})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise InputFileError(f"cannot read {path}: {exc}") from exc
