"""The mixing protocol's math."""

import numpy as np
import pytest
import torch

from datamix_cli.errors import ProtocolError
from datamix_cli.protocol.groups import pad_with_decoys, shuffle_permutation, unshuffle
from datamix_cli.protocol.mixing import MixingConfig, coefficient_rng, demix, draw_batch, draw_coefficients, mix


@pytest.mark.parametrize("k", [2, 4, 8])
def test_mix_is_the_explicit_weighted_sum_of_the_group(k):
    """m_i = Σ_j C[i, j]·h_j, written out as loops: an oracle independent of mix's reshape and matmul."""
    rng = coefficient_rng(0)
    c = draw_coefficients(rng, MixingConfig(k=k))
    h = rng.standard_normal((k, 3, 5, 5))
    expected = np.zeros_like(h)
    for i in range(k):
        for j in range(k):
            expected[i] += c[i, j] * h[j]
    np.testing.assert_allclose(mix(c, h), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mix(torch.from_numpy(c), torch.from_numpy(h)).numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_demix_with_the_inverse_recovers_the_group_within_1e_5_in_float32(k):
    """De-mixing float32 mixtures with float32 C⁻¹ (what the edge does) loses at most 1e-5 at κ ≤ 20."""
    rng = coefficient_rng(0)
    config = MixingConfig(k=k)
    for _ in range(20):
        c = draw_coefficients(rng, config)
        h = rng.standard_normal((k, 16, 5, 5)).astype(np.float32)
        mixtures = np.einsum("ij,j...->i...", c, h.astype(np.float64)).astype(np.float32)  # exact, then rounded once
        c_inv32 = np.linalg.inv(c).astype(np.float32)
        np.testing.assert_allclose(demix(c_inv32, mixtures), h, atol=1e-5, rtol=0)


def test_rows_are_convex_combinations_and_condition_is_bounded():
    config = MixingConfig(k=4, kappa_max=20)
    cs = draw_batch(coefficient_rng(1), config, 200)
    assert (cs >= 0).all()
    np.testing.assert_allclose(cs.sum(axis=2), 1.0)
    assert max(np.linalg.cond(c) for c in cs) <= 20


def test_alpha_controls_concentration():
    low = draw_batch(coefficient_rng(2), MixingConfig(k=4, alpha=0.1, kappa_max=1e6), 300).max(axis=2).mean()
    high = draw_batch(coefficient_rng(2), MixingConfig(k=4, alpha=10.0), 300).max(axis=2).mean()
    assert low > 0.8 > 0.5 > high


def test_unseeded_draws_differ():
    config = MixingConfig()
    assert not np.allclose(draw_coefficients(coefficient_rng(), config), draw_coefficients(coefficient_rng(), config))


def test_grouped_mix_matches_per_group_mix_in_numpy_and_torch():
    rng = coefficient_rng(3)
    config = MixingConfig(k=3)
    c = draw_batch(rng, config, 5)
    h = rng.standard_normal((5, 3, 2, 4))
    grouped = mix(c, h)
    for g in range(5):
        np.testing.assert_allclose(grouped[g], mix(c[g], h[g]))
    np.testing.assert_allclose(mix(torch.from_numpy(c), torch.from_numpy(h)).numpy(), grouped)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"k": 1}, "between 2 and 64"), ({"k": 65}, "between 2 and 64"), ({"alpha": 0}, "alpha"), ({"kappa_max": 0.5}, "kappa_max"), ({"noise_sigma": -1}, "sigma")],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ProtocolError, match=match):
        MixingConfig(**kwargs)


def test_unsatisfiable_condition_bound_is_an_error():
    with pytest.raises(ProtocolError, match="raise --kappa-max"):
        draw_coefficients(coefficient_rng(0), MixingConfig(k=64, kappa_max=2))


def test_shuffle_round_trip():
    rng = coefficient_rng(4)
    values = np.arange(12) * 10
    perm = shuffle_permutation(rng, 12)
    np.testing.assert_array_equal(unshuffle(values[perm], perm), values)


def test_decoy_padding():
    rng = coefficient_rng(5)
    x = np.zeros((5, 2), dtype=np.float32)
    decoys = np.ones((3, 2))
    padded, n = pad_with_decoys(x, decoys, 4, rng)
    assert n == 5 and padded.shape == (8, 2) and padded.dtype == np.float32
    assert padded[5:].min() == 1.0
    assert pad_with_decoys(x[:4], decoys, 4, rng)[0].shape == (4, 2)


@pytest.mark.parametrize("k", [2, 4, 16, 64])
def test_orthogonal_draws_are_orthogonal_with_condition_one_at_any_k(k):
    config = MixingConfig(k=k, distribution="orthogonal")
    cs = draw_batch(coefficient_rng(7), config, 20)
    for c in cs:
        np.testing.assert_allclose(c @ c.T, np.eye(k), atol=1e-12)
        assert np.linalg.cond(c) == pytest.approx(1.0)
    h = coefficient_rng(8).standard_normal((k, 3, 5))
    np.testing.assert_allclose(demix(cs[0].T, mix(cs[0], h)), h, atol=1e-12)  # C⁻¹ = Cᵀ


def test_orthogonal_draws_follow_the_haar_measure():
    """Under Haar measure every entry has mean 0 and variance 1/k, and C and -C are equally likely."""
    k = 4
    cs = draw_batch(coefficient_rng(9), MixingConfig(k=k, distribution="orthogonal"), 4000)
    assert abs(cs.mean()) < 0.01
    np.testing.assert_allclose((cs**2).mean(axis=0), np.full((k, k), 1 / k), atol=0.02)
    assert 0.45 < (cs[:, 0, 0] > 0).mean() < 0.55  # without the sign fix of QR, the diagonal would be biased


def test_unknown_distribution_is_refused():
    with pytest.raises(ProtocolError, match="unknown mixing distribution 'gaussian'"):
        MixingConfig(distribution="gaussian")


def test_dominant_sources_index_the_batch_in_numpy_and_torch():
    from datamix_cli.protocol.groups import dominant_sources

    cs = np.array([[[0.1, 0.9], [0.7, 0.3]], [[0.2, 0.8], [0.6, 0.4]]])  # groups of 2: rows pick 1, 0 and 1, 0
    got = dominant_sources(cs)
    assert isinstance(got, np.ndarray) and got.tolist() == [1, 0, 3, 2]
    assert dominant_sources(torch.from_numpy(cs)).tolist() == [1, 0, 3, 2]
