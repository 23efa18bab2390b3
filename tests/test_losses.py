"""Golden values of the loss terms against independent NumPy computations."""

import keras
import numpy as np
import pytest

from keras_l2t import losses


def _bilinear_resize(image, out_h, out_w):
    """Half-pixel-centre bilinear resize without antialiasing (PyTorch align_corners=False)."""
    in_h, in_w = image.shape[:2]

    def coords(out_size, in_size):
        src = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
        src = np.clip(src, 0, in_size - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, src - low

    y0, y1, wy = coords(out_h, in_h)
    x0, x1, wx = coords(out_w, in_w)
    top = image[y0][:, x0] * (1 - wx)[None, :, None] + image[y0][:, x1] * wx[None, :, None]
    bottom = image[y1][:, x0] * (1 - wx)[None, :, None] + image[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


@pytest.mark.parametrize("source_size, target_size", [(8, 4), (4, 8), (7, 3), (5, 5)])
def test_resize_to_matches_half_pixel_bilinear(source_size, target_size):
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2, source_size, source_size, 3)).astype("float32")
    resized = keras.ops.convert_to_numpy(losses.resize_to(source, (target_size, target_size)))
    expected = np.stack([_bilinear_resize(s, target_size, target_size) for s in source])
    np.testing.assert_allclose(resized, expected, rtol=1e-5, atol=1e-5)


def test_weighted_feature_matching_golden_value():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(3, 4, 4, 5)).astype("float32")
    target = rng.normal(size=(3, 4, 4, 5)).astype("float32")
    w = rng.dirichlet(np.ones(5), size=3).astype("float32")
    lam = np.array([0.5, 1.0, 2.5], "float32")
    got = keras.ops.convert_to_numpy(
        losses.weighted_feature_matching(source, target, w, lam, beta=0.5)
    )
    expected = np.zeros(3)
    for b in range(3):
        for c in range(5):
            d = np.mean((source[b, :, :, c] - target[b, :, :, c]) ** 2)
            expected[b] += 0.5 * lam[b] * w[b, c] * d
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_uniform_weights_reduce_to_plain_feature_matching():
    rng = np.random.default_rng(2)
    source = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    target = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    got = losses.weighted_feature_matching(source, target, np.full((2, 4), 0.25, "float32"),
                                           np.ones(2, "float32"), beta=1.0)
    expected = np.mean((source - target) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5)


def test_cross_entropy_for_integer_and_one_hot_labels():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], "float32")
    labels = np.array([0, 2])
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_softmax[[0, 1], labels]
    sparse = keras.ops.convert_to_numpy(losses.cross_entropy(labels, logits))
    column = losses.cross_entropy(labels[:, None], logits)  # keras.datasets' (N, 1) labels
    np.testing.assert_allclose(keras.ops.convert_to_numpy(column), expected, rtol=1e-6)
    np.testing.assert_allclose(sparse, expected, rtol=1e-6)
    for one_hot in (np.eye(3)[labels], np.eye(3, dtype="int64")[labels]):
        got = keras.ops.convert_to_numpy(losses.cross_entropy(one_hot, logits))
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=str(one_hot.dtype))
    probabilities = np.exp(log_softmax)
    from_probs = losses.cross_entropy(labels, probabilities, from_logits=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_probs), expected, rtol=1e-5)


def test_entropy_is_log_c_for_uniform_weights():
    got = keras.ops.convert_to_numpy(losses.entropy(np.full((2, 8), 1 / 8, "float32")))
    np.testing.assert_allclose(got, [np.log(8)] * 2, rtol=1e-6)
