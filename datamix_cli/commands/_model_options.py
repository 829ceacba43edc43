"""Options every command that loads a model shares."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from datamix_cli.errors import ModelSpecError

MODEL_ARG = typer.Argument(
    ...,
    help="path/to/file.py:factory, package.module:factory, a torch.export .pt2 archive, "
    "or a pickled nn.Module (needs --trust-pickle).",
    show_default=False,
)
WEIGHTS = typer.Option(None, "--weights", "-w", help="state_dict for a factory model, read with weights_only=True.")
TRUST_PICKLE = typer.Option(
    False, "--trust-pickle", help="Allow loading a whole pickled nn.Module. Unpickling runs arbitrary code: only for files you trust."
)
MODEL_KWARGS = typer.Option(None, "--model-kwargs", help='JSON object of keyword arguments for the factory, e.g. \'{"num_classes": 2}\'.')


def model_source(spec: str, weights: Path | None, trust_pickle: bool, model_kwargs: str | None):
    from datamix_cli.model.loading import ModelSource

    kwargs = {}
    if model_kwargs:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as exc:
            raise ModelSpecError(f"--model-kwargs is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise ModelSpecError("--model-kwargs must be a JSON object")
    return ModelSource(spec=spec, weights=weights, trust_pickle=trust_pickle, factory_kwargs=kwargs)
