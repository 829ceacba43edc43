"""The attacks ``datamix audit`` runs, registered by name like the exporters: adding one is one new file.

An attack is a function of an :class:`AttackContext` (the scene, the judge, the audit's settings and what the
attacks before it produced) returning an :class:`AttackOutcome`. They run by their declared ``order`` (never by
the order modules happen to be imported in), so an attack may use an earlier one's separated features or decoder. Every registered attack has a positive and a noise
control in tests/privacy (a test fails when one is missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from datamix_cli.errors import AttackRegistryError

if TYPE_CHECKING:
    import numpy as np

    from datamix_cli.privacy.judging import Judge
    from datamix_cli.privacy.scene import Scene


@dataclass
class AttackOutcome:
    """One attack's section of the report, the reconstructions it scored (by view, for the picture), and what
    later attacks may build on."""

    report: dict
    reconstructions: dict = field(default_factory=dict)
    separated: "np.ndarray | None" = None  # features recovered per audited sample
    decoder: object | None = None  # the unmixed public decoder it trained


@dataclass
class AttackContext:
    scene: "Scene"
    judge: "Judge"
    seed: int
    decoder_epochs: int
    search_steps: int
    earlier: dict = field(default_factory=dict)  # name -> AttackOutcome of the attacks already run

    @property
    def separated(self):
        """The features separation recovered, or None when it did not run."""
        outcome = self.earlier.get("separation")
        return None if outcome is None else outcome.separated

    @property
    def decoder(self):
        """The inversion attack's decoder, or None when it did not run."""
        outcome = self.earlier.get("inversion")
        return None if outcome is None else outcome.decoder


@dataclass(frozen=True)
class Attack:
    name: str
    description: str
    run: Callable[[AttackContext], AttackOutcome]
    order: int  # run position: lower runs first


_ATTACKS: dict[str, Attack] = {}


def register(name: str, description: str, order: int = 100):
    """Decorator: register ``run(context) -> AttackOutcome`` under ``name``, run at position ``order`` (after every
    attack whose results it uses); registering a name twice raises."""

    def decorate(run):
        if name in _ATTACKS:
            raise AttackRegistryError(f"attack {name!r} is already registered")
        _ATTACKS[name] = Attack(name, description, run, order)
        return run

    return decorate


def get_attack(name: str) -> Attack:
    try:
        return _ATTACKS[name]
    except KeyError:
        raise AttackRegistryError(f"unknown attack {name!r}; choose from {', '.join(_ATTACKS)}") from None


def attack_names() -> tuple[str, ...]:
    """Every registered attack, in the order the audit runs them."""
    return tuple(sorted(_ATTACKS, key=lambda name: (_ATTACKS[name].order, name)))
