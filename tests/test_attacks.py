"""Each attack succeeds where it should: otherwise every split would look private."""

import numpy as np

from datamix_cli.attacks import align_scale, amari_index, ica_unmix, image_metrics, match_sources, train_decoder, train_label_classifier


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

    from datamix_cli.data import load_dataset
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
    from datamix_cli.data import load_dataset

    digits = load_dataset("digits", (1, 8, 8))
    predict = train_label_classifier(digits.x[:1400], digits.y[:1400])
    assert (predict(digits.x[1400:]) == digits.y[1400:]).mean() > 0.8


def test_image_metrics_extremes():
    x = np.random.default_rng(3).random((1, 16, 16))
    ssim, psnr = image_metrics(x, x)
    assert ssim > 0.999 and psnr == float("inf")
    ssim, psnr = image_metrics(np.zeros_like(x), x)
    assert ssim < 0.1 and psnr < 10
