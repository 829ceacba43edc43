"""Each attack succeeds where it should: otherwise every split would look private."""

import numpy as np

import pytest

from datamix_cli.privacy.attacks.label import label_logits, train_label_classifier
from datamix_cli.privacy.attacks.search import cycle_naturalness, span_search
from datamix_cli.privacy.attacks.separation import ica_unmix, is_nonnegative, separable_unmix
from datamix_cli.privacy.decoders import group_stack, match_outputs, permutation_invariant_mse, train_decoder
from datamix_cli.privacy.metrics import abs_correlation, align_scale, amari_index, image_metrics, match_sources, reidentification
from datamix_cli.protocol.mixing import MixingConfig, coefficient_rng, draw_batch, draw_coefficients, mix


def relu_sources(rng, k: int, d: int = 4000, shift: float = 0.0) -> np.ndarray:
    """Independent non-negative sources with exact zeros, as after a ReLU (half the entries at shift 0, 84 % at 1)."""
    return np.maximum(rng.standard_normal((k, d)) - shift, 0)


def test_amari_index_is_zero_for_scaled_permutations_and_positive_otherwise():
    a = np.random.default_rng(0).random((4, 4)) + np.eye(4)
    perm = np.eye(4)[[2, 0, 3, 1]] * np.array([[3.0], [-1.0], [0.5], [2.0]])
    assert amari_index(perm @ np.linalg.inv(a), a) < 1e-12
    assert amari_index(np.eye(4), a) > 0.1


def test_ica_recovers_a_known_mixing_of_independent_non_gaussian_sources():
    rng = np.random.default_rng(1)
    sources = rng.laplace(size=(4, 20000))
    mixing = rng.dirichlet(np.ones(4), size=4)
    w, recovered = ica_unmix(mixing @ sources)
    assert amari_index(w, mixing) < 0.05
    order, corr = match_sources(recovered, sources)
    assert corr.min() > 0.99
    for j in range(4):
        aligned = align_scale(recovered[order[j]], sources[j])
        assert np.sqrt(np.mean((aligned - sources[j]) ** 2)) < 0.15 * sources[j].std()


def test_ica_cannot_separate_gaussian_sources():
    rng = np.random.default_rng(2)
    mixing = rng.dirichlet(np.ones(4), size=4)
    w, _ = ica_unmix(mixing @ rng.standard_normal((4, 20000)))
    assert amari_index(w, mixing) > 0.05  # the metric can tell a failed separation from a good one


def test_inversion_decoder_reconstructs_unmixed_shallow_digit_features():
    import torch

    from datamix_cli.data.datasets import load_dataset
    from examples.models import small_cnn
    from partitioners.graph import trace_model
    from partitioners.partition import extract_segment
    from partitioners.profile import profile_model

    torch.manual_seed(0)
    model = small_cnn()
    traced = trace_model(model)
    head = extract_segment(traced, 0, profile_model(traced, (1, 1, 32, 32)).cut("2").position)  # conv-bn-relu
    digits = load_dataset("digits", (1, 32, 32))
    with torch.no_grad():
        features = head(torch.from_numpy(digits.x)).numpy()
    public, private = slice(0, 1500), slice(1500, 1600)
    invert = train_decoder(features[public], digits.x[public], epochs=8)
    ssim = [image_metrics(r, t)[0] for r, t in zip(invert(features[private]), digits.x[private])]
    assert np.mean(ssim) > 0.5


def test_label_classifier_learns_digits_from_features():
    from datamix_cli.data.datasets import load_dataset

    digits = load_dataset("digits", (1, 8, 8))
    predict = train_label_classifier(digits.x[:1400], digits.y[:1400])
    assert (predict(digits.x[1400:]) == digits.y[1400:]).mean() > 0.8


def test_image_metrics_extremes():
    x = np.random.default_rng(3).random((1, 16, 16))
    ssim, psnr = image_metrics(x, x)
    assert ssim > 0.999 and psnr == float("inf")
    ssim, psnr = image_metrics(np.zeros_like(x), x)
    assert ssim < 0.1 and psnr < 10


# At k = 16, sparser sources, so that every source is alone at some positions (0.16 · 0.84^15 of them).
@pytest.mark.parametrize(("distribution", "k", "shift"), [("dirichlet", 4, 0.0), ("orthogonal", 8, 0.0), ("orthogonal", 16, 1.0)])
def test_separable_unmix_recovers_nonnegative_sources_and_their_scale(distribution, k, shift):
    rng = coefficient_rng(4)
    sources = relu_sources(rng, k, shift=shift)
    c = draw_coefficients(rng, MixingConfig(k=k, distribution=distribution, kappa_max=50))
    w, recovered = separable_unmix(c @ sources, rows_sum_to_one=distribution == "dirichlet")
    assert amari_index(w, c) < 1e-6
    order, corr = match_sources(recovered, sources)
    assert corr.min() > 0.999
    # The scale comes from the protocol (rows sum to one, or unit columns), not from the truth.
    np.testing.assert_allclose(recovered[order], sources, atol=1e-6)


def test_separable_unmix_fails_without_exact_zeros_and_on_noise():
    """Negative controls: strictly positive sources (no feature position carries one source alone) are not
    identified, and mixtures of noise independent of the sources recover nothing about them."""
    rng = np.random.default_rng(5)
    c = rng.dirichlet(np.ones(4), size=4)
    positive = 1.0 + rng.random((4, 4000))
    w, _ = separable_unmix(c @ positive, rows_sum_to_one=True)
    assert amari_index(w, c) > 0.05
    sources = relu_sources(rng, 4)
    _, recovered = separable_unmix(c @ relu_sources(rng, 4), rows_sum_to_one=True)
    assert match_sources(recovered, sources)[1].max() < 0.1


def test_is_nonnegative():
    assert is_nonnegative(np.maximum(np.random.default_rng(6).standard_normal(1000), 0))
    assert not is_nonnegative(np.random.default_rng(6).standard_normal(1000))


def test_adaptive_decoder_beats_the_unmixed_decoder_on_mixtures():
    """Trained on public mixtures (fresh orthogonal C and groups each epoch, target the input with the largest
    |coefficient|), the same decoder reconstructs a mixture's dominant input far better than one trained on
    unmixed features, which a negative dominant coefficient throws off. Flat digits keep it fast (MLP decoder)."""
    from datamix_cli.data.datasets import load_dataset

    digits = load_dataset("digits", (1, 8, 8))
    x = digits.x.reshape(len(digits.x), -1)
    x_pub, x_test = x[:1200], x[1200:1400]
    config, rng, k = MixingConfig(k=4, distribution="orthogonal"), coefficient_rng(7), 4

    def mixed(samples):
        cs = draw_batch(rng, config, len(samples) // k)
        dominant = (np.arange(len(cs))[:, None] * k + np.abs(cs).argmax(axis=2)).ravel()
        return mix(cs, samples.reshape(len(cs), k, -1)).reshape(samples.shape).astype(np.float32), samples[dominant]

    def public_pairs(_epoch=0):
        return mixed(x_pub[rng.permutation(len(x_pub))])

    test_mixtures, test_targets = mixed(x_test)
    unmixed = train_decoder(x_pub, x_pub, epochs=8)
    adaptive = train_decoder(*public_pairs(), epochs=8, resample=public_pairs)

    def mean_psnr(invert):
        return np.mean([image_metrics(r, t)[1] for r, t in zip(invert(test_mixtures), test_targets)])

    assert mean_psnr(adaptive) > mean_psnr(unmixed) + 2.0


def test_reidentification_is_perfect_for_the_truth_and_near_chance_for_noise():
    images = np.random.default_rng(8).random((64, 1, 8, 8))
    targets = np.arange(64)
    assert reidentification(images, images, targets) == 1.0
    noise = np.random.default_rng(9).random((64, 1, 8, 8))
    assert reidentification(noise, images, targets) <= 4 / 64
    # A reconstruction is re-identified against its own target, e.g. a mixture's dominant input.
    assert reidentification(images[[3, 3, 5]], images, np.array([3, 3, 5])) == 1.0


def test_abs_correlation_is_scale_and_sign_invariant():
    a = np.random.default_rng(10).random((3, 50))
    np.testing.assert_allclose(np.diag(abs_correlation(a, -2.5 * a + 1)), 1.0)


def test_permutation_invariant_mse_is_the_loss_of_the_best_assignment():
    """Against brute force over all k! assignments, and the gradient reaches the outputs only through that one."""
    import itertools

    import torch

    rng = np.random.default_rng(11)
    prediction = torch.tensor(rng.random((5, 3 * 2, 4)), dtype=torch.float64, requires_grad=True)  # 5 groups of k = 3
    target = torch.tensor(rng.random((5, 3 * 2, 4)))
    loss = permutation_invariant_mse(3)(prediction, target)
    pred, true = prediction.detach().numpy().reshape(5, 3, -1), target.numpy().reshape(5, 3, -1)
    best = [min(((p[list(order)] - t) ** 2).mean() for order in itertools.permutations(range(3))) for p, t in zip(pred, true)]
    np.testing.assert_allclose(loss.item(), np.mean(best))
    loss.backward()
    grad = prediction.grad.numpy().reshape(5, 3, -1)
    order = [min(itertools.permutations(range(3)), key=lambda o: ((p[list(o)] - t) ** 2).mean()) for p, t in zip(pred, true)]
    expected = np.stack([2 * (p[list(o)] - t)[np.argsort(o)] for p, t, o in zip(pred, true, order)]) / pred.size
    np.testing.assert_allclose(grad, expected, atol=1e-12)


def test_group_decoder_unmixes_groups_of_digits_and_not_noise():
    """The group decoder (k mixtures in, k images out, permutation-invariant loss) recovers both digits of
    orthogonally mixed pairs far above the best of k random public digits, and nothing from noise."""
    from datamix_cli.data.datasets import load_dataset

    k, rng = 2, coefficient_rng(12)
    x = load_dataset("digits", (1, 8, 8)).x
    x_pub, x_test = x[:800], x[1200:1264]
    config = MixingConfig(k=k, distribution="orthogonal")

    def mixed(samples):
        cs = draw_batch(rng, config, len(samples) // k)
        return mix(cs, samples.reshape(len(cs), k, -1)).reshape(samples.shape).astype(np.float32)

    def public_groups(_epoch=0):
        order = rng.permutation(len(x_pub))
        return group_stack(mixed(x_pub[order]), k), group_stack(x_pub[order], k)

    decode = train_decoder(*public_groups(), epochs=5, batch=32, resample=public_groups, loss=permutation_invariant_mse(k))

    def mean_psnr(inputs):
        outputs = decode(group_stack(inputs, k)).reshape(x_test.shape)
        paired = np.concatenate([outputs[g : g + k][match_outputs(outputs[g : g + k], x_test[g : g + k])] for g in range(0, len(x_test), k)])
        return np.mean([image_metrics(r, t)[1] for r, t in zip(paired, x_test)])

    guesses = x_pub[np.random.default_rng(13).choice(len(x_pub), size=(len(x_test), k))]
    chance = np.mean([max(image_metrics(g, t)[1] for g in pool) for pool, t in zip(guesses, x_test)])
    assert mean_psnr(mixed(x_test)) > chance + 3.0
    assert mean_psnr(np.random.default_rng(14).standard_normal(x_test.shape).astype(np.float32)) < chance


@pytest.fixture(scope="module")
def tanh_head():
    """A pre-activation cut of a random two-layer head (conv, tanh, conv) on 8x8 digits: features of both signs,
    so non-negative separation does not apply; its public decoder; 64 audited samples."""
    import torch
    from torch import nn

    from datamix_cli.data.datasets import load_dataset

    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1)).eval().requires_grad_(False)
    digits = load_dataset("digits", (1, 8, 8))
    with torch.no_grad():
        h = head(torch.from_numpy(digits.x)).numpy()
    public, audited = slice(0, 800), slice(1200, 1264)
    decoder = train_decoder(h[public], digits.x[public], epochs=5)
    return h[audited], h[public].reshape(800, -1).mean(axis=0), cycle_naturalness(head, decoder)


@pytest.mark.parametrize("distribution", ["dirichlet", "orthogonal"])
def test_span_search_recovers_features_of_both_signs(tanh_head, distribution):
    h, mu, naturalness = tanh_head
    assert np.mean(h < 0) > 0.3
    k = 4
    cs = draw_batch(coefficient_rng(15), MixingConfig(k=k, distribution=distribution), len(h) // k)
    truth = h.reshape(len(cs), k, -1)
    m = mix(cs, truth).astype(np.float32)
    inits = np.stack([np.stack([np.eye(k), ica_unmix(rows - mu)[0]]) for rows in m])
    w, found, _ = span_search(m, inits, naturalness, mu, h.shape[1:])
    searched = np.mean([match_sources(f - mu, t - mu)[1].mean() for f, t in zip(found, truth)])
    single = np.mean([abs_correlation(rows - mu, t - mu).max(axis=0).mean() for rows, t in zip(m, truth)])
    ica = np.mean([match_sources(ica_unmix(rows - mu)[1], t - mu)[1].mean() for rows, t in zip(m, truth)])
    assert searched > 0.85 and searched > single + 0.1 and searched > ica + 0.1, (searched, single, ica)
    assert np.mean([amari_index(wg, c) for wg, c in zip(w, cs)]) < 0.3


def test_span_search_finds_nothing_in_the_span_of_noise(tanh_head):
    h, mu, naturalness = tanh_head
    k = 4
    truth = h.reshape(len(h) // k, k, -1)
    noise = (mu + h.std() * np.random.default_rng(16).standard_normal(truth.shape)).astype(np.float32)
    _, found, _ = span_search(noise, np.stack([np.eye(k)[None]] * len(truth)), naturalness, mu, h.shape[1:], steps=20)
    assert np.mean([match_sources(f - mu, t - mu)[1].mean() for f, t in zip(found, truth)]) < 0.2


def test_label_logits_is_the_label_classifier():
    from datamix_cli.data.datasets import load_dataset

    digits = load_dataset("digits", (1, 8, 8))
    logits = label_logits(digits.x[:600], digits.y[:600])(__import__("torch").from_numpy(digits.x[600:700]))
    np.testing.assert_array_equal(logits.argmax(dim=1).numpy(), train_label_classifier(digits.x[:600], digits.y[:600])(digits.x[600:700]))
