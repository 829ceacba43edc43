"""Attacks a curious cloud can mount on what DataMix sends it, one module per family, each registered by name.

Each attack is tested to succeed where it should and to fail on noise (tests/privacy): an attack too weak to
succeed anywhere would make every split look private. Importing this package registers them, in the order the
audit runs them: separation first (its features feed inversion and label), inversion before the span search
(which reuses its decoder).
"""

# One import a line, in the audit's order (registration order is run order): keep it unsorted.
from datamix_cli.privacy.attacks import separation  # noqa: F401, I001
from datamix_cli.privacy.attacks import decoding  # noqa: F401
from datamix_cli.privacy.attacks import search  # noqa: F401
from datamix_cli.privacy.attacks import label  # noqa: F401
from datamix_cli.privacy.attacks.registry import Attack, AttackContext, AttackOutcome, attack_names, get_attack, register

__all__ = ["Attack", "AttackContext", "AttackOutcome", "attack_names", "get_attack", "register"]
