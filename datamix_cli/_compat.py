"""Old import paths, kept for one release (0.1.x → 0.2): the flat modules of datamix 0.1 moved into sub-packages.

``from datamix_cli.mixing import MixingConfig`` still works and warns (DeprecationWarning) with the new path.
Each old module name maps to the modules its public names went to; nothing is imported until a name is asked
for, so ``import datamix_cli`` stays free of torch. Remove in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

PACKAGE = "datamix_cli"
MOVED = {
    "loading": ("model.loading",),
    "preprocess": ("data.preprocessing", "data.geometry"),
    "inputs": ("data.inputs",),
    "mixing": ("protocol.mixing", "protocol.groups", "errors"),
    "edge_modules": ("protocol.edge_modules",),
    "presets": ("protocol.presets",),
    "distributed": ("training.distributed",),
    "devices": ("training.devices",),
    "profiling": ("pipeline.profile",),
    "splitting": ("pipeline.split", "pipeline.export", "model.identity"),
    "manifest": ("artifacts.manifest",),
    "output": ("artifacts.staging",),
    "server": ("serving.server", "serving.oip"),
    "client": ("serving.client", "errors"),
    "loopback": ("serving.loopback", "errors"),
    "deploy": ("serving.deploy.triton", "serving.deploy.kserve", "serving.deploy.yaml"),
    "attacks": ("privacy.metrics", "privacy.decoders", "privacy.attacks.separation", "privacy.attacks.search", "privacy.attacks.label"),
    "auditing": ("privacy.audit", "privacy.scene", "privacy.attacks.separation", "privacy.attacks.decoding", "privacy.attacks.search",
                 "privacy.attacks.label", "privacy.plots"),
    "judging": ("privacy.judging", "privacy.metrics"),
}
# Old modules whose name is now a package: their old public names, looked up in these modules.
PACKAGE_NAMES = {
    "data": ("data.datasets", "data.images", "data.geometry"),
    "training": ("training.finetune", "training.mixed", "training.evaluation"),
}


def lookup(old: str, name: str, targets: tuple[str, ...]):
    """``name`` from the first of ``targets`` that has it, with a DeprecationWarning naming its new home."""
    if name.startswith("__"):
        raise AttributeError(name)
    for target in targets:
        module = importlib.import_module(f"{PACKAGE}.{target}")
        if hasattr(module, name):
            value = getattr(module, name)
            home = getattr(value, "__module__", None)  # where a class or function is defined, if in datamix
            home = home if isinstance(home, str) and home.startswith(PACKAGE + ".") else f"{PACKAGE}.{target}"
            warnings.warn(f"{PACKAGE}.{old}.{name} moved to {home}.{name}; the old path goes in datamix 0.3", DeprecationWarning, stacklevel=3)
            return value
    raise AttributeError(f"module {PACKAGE}.{old!r} has no attribute {name!r}")


class _MovedModule(types.ModuleType):
    def __getattr__(self, name):
        return lookup(self.__name__.rpartition(".")[2], name, MOVED[self.__name__.rpartition(".")[2]])


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        package, _, old = fullname.rpartition(".")
        if package == PACKAGE and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return _MovedModule(spec.name)

    def exec_module(self, module):
        pass


def install() -> None:
    """Put the finder last on sys.meta_path (real modules are always found first); idempotent."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())


def package_getattr(old: str):
    """A module ``__getattr__`` for the package that took an old module's name (``data``, ``training``)."""

    def __getattr__(name):
        return lookup(old, name, PACKAGE_NAMES[old])

    return __getattr__
