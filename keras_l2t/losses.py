"""Per-example loss terms of L2T-ww, written in `keras.ops` for any backend.

Every function returns one value per example. The caller divides the sum by the
global batch size, so the same code is right on one device and under
`tf.distribute` (where each replica sees part of the batch).
"""

from __future__ import annotations

from keras import ops


def resize_to(source_map, size):
    """Bilinearly resizes `source_map` to spatial `size` (height, width).

    Half-pixel centres and no antialiasing, as PyTorch's
    `F.interpolate(mode="bilinear", align_corners=False)` in the reference.

    Args:
        source_map: (batch, H_s, W_s, C) source feature map.
        size: (H_t, W_t), the target map's spatial size.

    Returns:
        (batch, H_t, W_t, C); `source_map` itself when the sizes already agree.
    """
    size = tuple(size)
    if tuple(source_map.shape[1:3]) == size:
        return source_map
    return ops.image.resize(source_map, size, interpolation="bilinear", antialias=False)


def channel_distances(source_map, adapted_target_map):
    """d[b, c] = mean over (h, w) of (S - r(T))^2.

    Args:
        source_map: (batch, H, W, C) source map, already resized to the target's size.
        adapted_target_map: (batch, H, W, C) target map after the 1x1 adapter.

    Returns:
        (batch, C) per-channel mean squared distances.
    """
    return ops.mean(ops.square(source_map - adapted_target_map), axis=(1, 2))


def rms_normalized(feature_map, epsilon: float = 1e-6):
    """Each example's map divided by its root mean square over positions and channels.

    Args:
        feature_map: (batch, H, W, C).
        epsilon: Floor of the root mean square (an all-zero map stays zero).

    Returns:
        (batch, H, W, C) maps whose mean square is 1 (0 for an all-zero map).

    Example:
        >>> from keras import ops
        >>> from keras_l2t.losses import rms_normalized
        >>> x = ops.reshape(ops.arange(1.0, 5.0), (1, 2, 2, 1)) * 10
        >>> round(float(ops.mean(ops.square(rms_normalized(x)))), 4)
        1.0
    """
    mean_square = ops.mean(ops.square(feature_map), axis=(1, 2, 3), keepdims=True)
    return feature_map / ops.maximum(ops.sqrt(mean_square), epsilon)


def weighted_feature_matching(
    source_map, adapted_target_map, channel_weights, pair_weight, beta: float = 0.5
):
    """Per-example weighted feature-matching loss of one pair (L2T-ww, Eq. 1-3).

    loss[b] = beta * lambda[b] * sum_c w[b, c] * d[b, c], with d from
    `channel_distances`. Its batch mean is the reference's L_pair.

    Args:
        source_map: (batch, H, W, C) source map, resized to the target map's size.
        adapted_target_map: (batch, H, W, C) adapted target map r(T^n(x)).
        channel_weights: (batch, C) "what" weights w (uniform 1/C for plain FM).
        pair_weight: (batch,) "where" weights lambda (1 for plain FM).
        beta: Overall weight of the matching loss.

    Returns:
        (batch,) loss per example.

    Example:
        >>> from keras import ops
        >>> from keras_l2t.losses import weighted_feature_matching
        >>> s, t = ops.ones((2, 4, 4, 8)), ops.zeros((2, 4, 4, 8))
        >>> loss = weighted_feature_matching(s, t, ops.ones((2, 8)) / 8, ops.ones((2,)))
        >>> ops.convert_to_numpy(loss).tolist()  # 0.5 * 1 * sum_c (1/8) * 1
        [0.5, 0.5]
    """
    distances = channel_distances(source_map, adapted_target_map)
    return beta * pair_weight * ops.sum(channel_weights * distances, axis=-1)


def cross_entropy(labels, outputs, from_logits: bool = True):
    """Per-example cross-entropy for integer labels, (batch,) or (batch, 1), or one-hot
    labels (batch, K).

    Args:
        labels: Integer class ids, or one-hot (integer or float) / soft labels with the
            outputs' shape.
        outputs: (batch, K) logits, or probabilities when `from_logits=False`.
        from_logits: Whether `outputs` are logits.

    Returns:
        (batch,) cross-entropy per example.
    """
    if len(labels.shape) == len(outputs.shape) and labels.shape[-1] != 1:  # any dtype
        labels = ops.cast(labels, outputs.dtype)
        return ops.categorical_crossentropy(labels, outputs, from_logits=from_logits)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    return ops.sparse_categorical_crossentropy(labels, outputs, from_logits=from_logits)


def entropy(probabilities):
    """Per-example entropy -sum p log p over the last axis (natural log)."""
    return -ops.sum(probabilities * ops.log(ops.maximum(probabilities, 1e-12)), axis=-1)


def attention_map(feature_map):
    """Spatial attention of a feature map: the mean over channels of A^2, flattened and
    L2-normalised per example (Zagoruyko & Komodakis 2017, p = 2).

    Args:
        feature_map: (batch, H, W, C).

    Returns:
        (batch, H * W) unit-norm attention vectors.
    """
    energy = ops.mean(ops.square(feature_map), axis=-1)
    flat = ops.reshape(energy, (ops.shape(energy)[0], -1))
    return flat / ops.maximum(ops.norm(flat, axis=-1, keepdims=True), 1e-12)


def attention_transfer(source_map, target_map, beta: float = 1000.0):
    """Per-example attention-transfer loss of one pair: beta / 2 * mean over positions of
    (Q_s - Q_t)^2, with Q = `attention_map` (the authors' code: `(at(x) - at(y))
    .pow(2).mean()` times beta / 2, beta = 1000).

    Args:
        source_map: (batch, H, W, C_s) source map, already resized to the target's size.
        target_map: (batch, H, W, C_t) target map; channel counts may differ.
        beta: Weight of the loss.

    Returns:
        (batch,) loss per example.
    """
    difference = attention_map(source_map) - attention_map(target_map)
    return beta / 2 * ops.mean(ops.square(difference), axis=-1)


def distillation(source_logits, target_logits, temperature: float = 2.0):
    """Per-example distillation loss of LwF (Li & Hoiem 2017): the cross-entropy between
    the source's and the target's outputs softened by `temperature`,
    -sum_k softmax(s / T)_k log softmax(h / T)_k (no T^2 factor, as LwF).

    Args:
        source_logits: (batch, K) logits of the frozen source.
        target_logits: (batch, K) logits of the target's extra head.
        temperature: Softening temperature T (2 in LwF).

    Returns:
        (batch,) loss per example.
    """
    soft_targets = ops.softmax(source_logits / temperature, axis=-1)
    log_probabilities = ops.log_softmax(target_logits / temperature, axis=-1)
    return -ops.sum(soft_targets * log_probabilities, axis=-1)
