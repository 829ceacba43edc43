"""The attack registry: every registered attack has a positive and a noise control, names are unique."""

import pytest

from datamix_cli.errors import AttackRegistryError
from datamix_cli.privacy.attacks import attack_names, get_attack, register
from tests.privacy import test_attacks, test_audit

# attack -> (its positive control, its noise control): tests that fail if the attack stops succeeding where it
# should, or starts "succeeding" on noise. The audit-level controls run every registered attack.
CONTROLS = {
    "separation": (test_attacks.test_separable_unmix_recovers_nonnegative_sources_and_their_scale,
                   test_attacks.test_separable_unmix_fails_without_exact_zeros_and_on_noise),
    "inversion": (test_attacks.test_inversion_decoder_reconstructs_unmixed_shallow_digit_features,
                  test_audit.test_negative_control_noise_independent_of_the_inputs_is_at_chance),
    "adaptive": (test_attacks.test_adaptive_decoder_beats_the_unmixed_decoder_on_mixtures,
                 test_audit.test_negative_control_noise_independent_of_the_inputs_is_at_chance),
    "group": (test_attacks.test_group_decoder_unmixes_groups_of_digits_and_not_noise,
              test_attacks.test_group_decoder_unmixes_groups_of_digits_and_not_noise),
    "optimisation": (test_attacks.test_span_search_recovers_features_of_both_signs,
                     test_attacks.test_span_search_finds_nothing_in_the_span_of_noise),
    "label": (test_attacks.test_label_classifier_learns_digits_from_features,
              test_audit.test_negative_control_noise_independent_of_the_inputs_is_at_chance),
}
AUDIT_CONTROLS = (test_audit.test_positive_control_identity_mixing_leaks, test_audit.test_negative_control_noise_independent_of_the_inputs_is_at_chance)


def test_every_registered_attack_has_a_positive_and_a_noise_control():
    missing = [name for name in attack_names() if name not in CONTROLS]
    assert not missing, f"registered attacks without controls in tests/privacy: {missing}"
    assert set(CONTROLS) <= set(attack_names()), "controls listed for attacks that are not registered"
    for control in AUDIT_CONTROLS:  # they run the audit with every registered attack
        assert "FAST" in control.__code__.co_names and "attacks" not in test_audit.FAST


def test_the_audit_runs_attacks_in_dependency_order():
    names = attack_names()
    assert names.index("separation") < names.index("inversion") < names.index("optimisation")
    assert names.index("separation") < names.index("label")


def test_registering_a_name_twice_or_asking_for_an_unknown_one_raises():
    with pytest.raises(AttackRegistryError, match="already registered"):
        register("separation", "again")(lambda context: None)
    with pytest.raises(AttackRegistryError, match="unknown attack 'telepathy'"):
        get_attack("telepathy")
