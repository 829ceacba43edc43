"""Attacks a curious cloud can mount on what DataMix sends it, one module per family, each registered by name.

Each attack is tested to succeed where it should and to fail on noise (tests/privacy): an attack too weak to
succeed anywhere would make every split look private. Importing this package registers them; each declares
where it runs: separation first (its features feed inversion and label), inversion before the span search
(which reuses its decoder).
"""

from datamix_cli.privacy.attacks import decoding, label, search, separation  # noqa: F401  (importing registers them)
from datamix_cli.privacy.attacks.registry import Attack, AttackContext, AttackOutcome, attack_names, get_attack, register

__all__ = ["Attack", "AttackContext", "AttackOutcome", "attack_names", "get_attack", "register"]
