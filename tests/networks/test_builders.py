"""The paper's networks: parameter counts, tap shapes, flat graphs, exact BN, logits."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest

from keras_l2t.exact_batch_norm import is_batch_norm_exact
from keras_l2t.networks import (
    DEFAULT_TAPS,
    NETWORKS,
    build_network,
    default_taps,
    feature_extractor,
    resnet18,
    resnet34,
)

# --- Parameter counts by hand -------------------------------------------------------
# Keras' count_params() includes BatchNorm's moving mean and variance (non-trainable);
# PyTorch's usual figure (sum of p.numel() over parameters()) counts only trainable
# parameters, whose Keras counterpart is the trainable count.


def _conv(k: int, cin: int, cout: int, bias: bool = False) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c  # gamma, beta (trainable); moving mean/var add another 2 * c


def _basic_block(cin: int, cout: int) -> tuple[int, int]:
    """(trainable, BN channels) of a torchvision BasicBlock."""
    params = _conv(3, cin, cout) + _bn(cout) + _conv(3, cout, cout) + _bn(cout)
    channels = 2 * cout
    if cin != cout:
        params += _conv(1, cin, cout) + _bn(cout)
        channels += cout
    return params, channels


def _resnet_counts(stem: tuple[int, int], widths, blocks, num_classes) -> tuple[int, int]:
    """(trainable, non-trainable) of a basic-block ResNet with a linear head."""
    trainable, channels = stem
    cin = widths[0]
    for width, count in zip(widths, blocks, strict=True):
        for _ in range(count):
            params, ch = _basic_block(cin, width)
            trainable, channels, cin = trainable + params, channels + ch, width
    trainable += widths[-1] * num_classes + num_classes
    return trainable, 2 * channels


def imagenet_resnet_counts(blocks, num_classes: int) -> tuple[int, int]:
    stem = (_conv(7, 3, 64) + _bn(64), 64)  # 7x7/2 conv without bias, BN
    return _resnet_counts(stem, (64, 128, 256, 512), blocks, num_classes)


def resnet32_counts(num_classes: int) -> tuple[int, int]:
    stem = (_conv(3, 3, 16, bias=True) + _bn(16), 16)  # the reference's stem has a bias
    return _resnet_counts(stem, (16, 32, 64), (5, 5, 5), num_classes)


def vgg9_counts(num_classes: int) -> tuple[int, int]:
    widths = (64, 128, 256, 256, 512, 512, 512, 512)
    trainable, cin = 0, 3
    for width in widths:
        trainable += _conv(3, cin, width, bias=True) + _bn(width)
        cin = width
    trainable += 512 * num_classes + num_classes
    return trainable, 2 * sum(widths)


def _counts(model: keras.Model) -> tuple[int, int]:
    def total(weights):
        return sum(int(np.prod(w.shape)) for w in weights)

    return total(model.trainable_weights), total(model.non_trainable_weights)


# torchvision.models.resnet18() / resnet34(): sum(p.numel() for p in m.parameters()).
TORCHVISION_RESNET18 = 11_689_512
TORCHVISION_RESNET34 = 21_797_672


@pytest.mark.parametrize(
    "name, num_classes, expected",
    [
        ("resnet18", 1000, (11_689_512, 9_600)),
        ("resnet34", 1000, (21_797_672, 17_024)),
        ("resnet32", 200, (479_272, 2_464)),
        ("vgg9", 100, (9_277_284, 5_504)),
    ],
)
def test_parameter_counts(name, num_classes, expected):
    by_hand = {
        "resnet18": lambda n: imagenet_resnet_counts((2, 2, 2, 2), n),
        "resnet34": lambda n: imagenet_resnet_counts((3, 4, 6, 3), n),
        "resnet32": resnet32_counts,
        "vgg9": vgg9_counts,
    }[name](num_classes)
    assert by_hand == expected
    model = build_network(name, num_classes)
    assert _counts(model) == expected
    assert model.count_params() == sum(expected)


def test_imagenet_resnets_match_torchvision():
    assert imagenet_resnet_counts((2, 2, 2, 2), 1000)[0] == TORCHVISION_RESNET18
    assert imagenet_resnet_counts((3, 4, 6, 3), 1000)[0] == TORCHVISION_RESNET34


TAP_SHAPES = {
    "resnet18": [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)],
    "resnet34": [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)],
    "resnet32": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "vgg9": [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (2, 2, 512)],
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_taps_flat_logits_and_exact_batch_norm(name):
    model = build_network(name, num_classes=10)
    taps = default_taps(name)
    assert taps == list(DEFAULT_TAPS[name])
    # Flat: the taps and every BN are top-level layers, no nested models.
    top_level = {layer.name for layer in model.layers}
    assert set(taps) <= top_level
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert [tuple(model.get_layer(t).output.shape)[1:] for t in taps] == TAP_SHAPES[name]
    # Taps are ReLU outputs (as in the authors' code: block outputs after the ReLU).
    for tap in taps:
        assert model.get_layer(tap).get_config()["activation"] == "relu"
    # Logits: a Dense without activation, one output.
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].get_config()["activation"] == "linear"
    assert tuple(model.output.shape) == (None, 10)
    # A target is exact by default (see `keras_l2t.exact_batch_norm`), and only on request not.
    assert is_batch_norm_exact(model)
    # Keras' stock BN is inexact in second order on TensorFlow only.
    stock_is_exact = keras.backend.backend() != "tensorflow"
    assert is_batch_norm_exact(build_network(name, 10, exact_batch_norm=False)) == stock_is_exact
    # feature_extractor taps the model by name.
    extractor = feature_extractor(model, taps, include_output=True)
    assert [tuple(o.shape)[1:] for o in extractor.outputs[1:]] == TAP_SHAPES[name]


@pytest.mark.parametrize(
    "name, input_shape",
    [("resnet18", (64, 64, 3)), ("resnet32", (32, 32, 3)), ("vgg9", (32, 32, 3))],
)
def test_forward_pass_small(name, input_shape):
    model = build_network(name, num_classes=7, input_shape=input_shape)
    extractor = feature_extractor(model, default_taps(name), include_output=True)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    outputs = extractor(x, training=True)
    assert tuple(outputs[0].shape) == (2, 7)
    for tap, out in zip(default_taps(name), outputs[1:], strict=True):
        assert out.shape[1:] == model.get_layer(tap).output.shape[1:]
        assert float(np.min(out)) >= 0.0  # after the ReLU
    np.testing.assert_allclose(model(x, training=False), extractor(x)[0], rtol=1e-5, atol=1e-5)


def test_imagenet_resnet_layout_and_init():
    model = resnet18(num_classes=5)
    # torchvision layout: stride on the first 3x3 conv, projection only where shapes change.
    assert model.get_layer("stack1_block0_1_conv").get_config()["strides"] == (2, 2)
    assert model.get_layer("stack1_block0_2_conv").get_config()["strides"] == (1, 1)
    assert model.get_layer("stack1_block0_0_conv").get_config()["strides"] == (2, 2)
    assert "stack0_block0_0_conv" not in {layer.name for layer in model.layers}
    # PyTorch BatchNorm defaults, gamma 1 and beta 0.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.momentum, layer.epsilon) == (0.9, 1e-5), layer.name
            gamma, beta = layer.get_weights()[:2]
            np.testing.assert_array_equal(gamma, 1.0)
            np.testing.assert_array_equal(beta, 0.0)
    # Kaiming-normal fan-out: std sqrt(2 / (k * k * out)), mean 0.
    kernel = model.get_layer("stack3_block1_2_conv").get_weights()[0]
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * 512)), rtol=0.02)
    assert abs(kernel.mean()) < 1e-4
    stem = model.get_layer("conv1_conv").get_weights()[0]
    np.testing.assert_allclose(stem.std(), np.sqrt(2.0 / (49 * 64)), rtol=0.05)
    # The head as a default torch.nn.Linear(512, 5): uniform on +-1/sqrt(512).
    bound = 1 / np.sqrt(512)
    kernel, bias = model.get_layer("logits").get_weights()
    assert 0.99 * bound < np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound


def test_imagenet_resnet_pads_like_torchvision():
    """Both sides equally (torchvision), not TensorFlow's "same" (0 before, 1 after)."""
    model = resnet34(num_classes=5)
    pads = {"conv1_pad": 3, "pool1_pad": 1}
    pads.update({f"stack{s}_block0_1_pad": 1 for s in (1, 2, 3)})
    for name, pad in pads.items():
        assert model.get_layer(name).get_config()["padding"] == ((pad, pad), (pad, pad)), name
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.MaxPooling2D):
            config = layer.get_config()
            strided = config["strides"] != (1, 1)
            assert config["padding"] == ("valid" if strided or layer.name == "pool1_pool"
                                         else "same"), layer.name


def test_saved_model_needs_no_keras_hub(tmp_path):
    path = str(tmp_path / "resnet18.keras")
    resnet18(num_classes=3, input_shape=(32, 32, 3)).save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json").decode())
    assert config["class_name"] == "Functional"
    assert config["module"].startswith("keras.")
    layers = config["config"]["layers"]
    # Plain Keras layers only: no keras-hub class or registered name anywhere.
    assert {layer["module"] for layer in layers} == {"keras.layers"}
    assert {layer["registered_name"] for layer in layers} == {None}
    assert "keras_hub" not in json.dumps(config)
    loaded = keras.saving.load_model(path, compile=False)
    assert "stage4_out" in {layer.name for layer in loaded.layers}


def test_small_cnns_by_name():
    model = build_network("cnn_4_6", 3, (8, 8, 3))
    assert model.name == "cnn_4_6" and model.output.shape == (None, 3)
    assert [tuple(model.get_layer(name).output.shape) for name in default_taps("cnn_4_6")] == [
        (None, 8, 8, 4), (None, 4, 4, 6)]
    assert is_batch_norm_exact(model)


def test_unknown_network_is_a_clear_error():
    with pytest.raises(ValueError, match="Known networks.*resnet18.*cnn_16_32_64"):
        build_network("resnet19", 10)
    with pytest.raises(ValueError, match="Known networks"):
        build_network("cnn_", 10)
    with pytest.raises(ValueError, match="Known networks"):
        default_taps("resnet19")


def test_resnet32_strided_convs_pad_like_pytorch():
    model = build_network("resnet32", 10)
    for stage in (2, 3):
        assert model.get_layer(f"stage{stage}_block1_pad").get_config()["padding"] == (
            (1, 1),
            (1, 1),
        )
        conv = model.get_layer(f"stage{stage}_block1_conv1").get_config()
        assert (conv["strides"], conv["padding"]) == ((2, 2), "valid")
    assert model.get_layer("stem_conv").get_config()["use_bias"]  # as the reference
