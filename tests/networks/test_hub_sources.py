"""keras-hub presets as sources: a local timm-format preset against torchvision's forward.

Offline and without PyTorch: the presets are written here from NumPy state dicts under
torchvision's names (`torchvision_resnets`), and the forward pass they are checked against
is torchvision's, written in NumPy. A remote preset is only ever asked for in offline
mode, where the client answers without the network.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torchvision_resnets as tv

from keras_l2t import hub_sources
from keras_l2t.networks import build_network
from keras_l2t.sources import SourceWeightsUnavailable, load_source, source_taps

CLASSES = 6
SIZE = 32
TAPS = ["stage1_out", "stage2_out", "stage3_out", "stage4_out"]


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """{arch: (preset directory, state dict)}, ImageNet mean/std as tv_in1k."""
    root = tmp_path_factory.mktemp("presets")
    made = {}
    for seed, arch in enumerate(("resnet18", "resnet34")):
        state = tv.random_state_dict(arch, CLASSES, seed=seed)
        made[arch] = (tv.write_timm_preset(str(root / f"{arch}.tv_in1k"), arch, state), state)
    return made


def _images(seed: int = 1, n: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")


def _outputs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    extractor = keras.Model(model.input, [model.get_layer(t).output for t in TAPS] + [model.output])
    return [keras.ops.convert_to_numpy(t) for t in extractor(x, training=False)]


def _assert_close(ours, theirs):
    # float32 against float64: agreement to float32's precision at each map's scale.
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.shape == reference.shape
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
def test_a_timm_preset_computes_torchvisions_forward(presets, arch):
    path, state = presets[arch]
    source = load_source(f"{hub_sources.HUB_PREFIX}{path}", input_shape=(SIZE, SIZE, 3))
    assert not source.trainable and not source.trainable_weights
    assert source_taps(source) == TAPS
    assert source.layers[-1].name == "logits" and source.output.shape == (None, CLASSES)
    # Flat, of plain Keras layers, no input adapter for torchvision's normalisation.
    assert not any(isinstance(layer, keras.Model) for layer in source.layers)
    assert {type(layer).__module__.split(".")[0] for layer in source.layers} == {"keras"}
    assert hub_sources.ADAPTER_NAME not in {layer.name for layer in source.layers}
    x = _images()
    logits, stages = tv.forward(arch, state, x)
    _assert_close(_outputs(source, x), [*stages, logits])


def test_torchvision_weights_are_where_keras_hub_put_them(presets):
    path, state = presets["resnet18"]
    source = load_source(f"hub:{path}", input_shape=(SIZE, SIZE, 3))

    def weights(name):
        return source.get_layer(name).get_weights()

    np.testing.assert_array_equal(
        weights("conv1_conv")[0], state["conv1.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        weights("stack2_block0_0_conv")[0],
        state["layer3.0.downsample.0.weight"].transpose(2, 3, 1, 0),
    )
    for value, key in zip(
        weights("stack3_block1_2_bn"), ("weight", "bias", "running_mean", "running_var")
    ):
        np.testing.assert_array_equal(value, state[f"layer4.1.bn2.{key}"])
    np.testing.assert_array_equal(weights("logits")[0], state["fc.weight"].T)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
def test_the_builders_are_torchvisions_architecture(presets, arch):
    """The same weights, by layer name, in `build_network(arch)` give torchvision's forward:
    the target's architecture (padding included) is the source's."""
    path, state = presets[arch]
    source = load_source(f"hub:{path}", input_shape=(SIZE, SIZE, 3))
    target = build_network(arch, CLASSES, (SIZE, SIZE, 3), exact_batch_norm=False)
    with_weights = [layer for layer in target.layers if layer.weights]
    assert {layer.name for layer in with_weights} == {
        layer.name for layer in source.layers if layer.weights
    }
    for layer in with_weights:
        layer.set_weights(source.get_layer(layer.name).get_weights())
    x = _images(seed=3)
    logits, stages = tv.forward(arch, state, x)
    _assert_close(_outputs(target, x), [*stages, logits])


def test_another_normalisation_gets_a_frozen_adapter(tmp_path, presets):
    _, state = presets["resnet18"]
    path = tv.write_timm_preset(
        str(tmp_path / "half"), "resnet18", state, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    source = load_source(f"hub:{path}", input_shape=(SIZE, SIZE, 3))
    assert source.layers[1].name == hub_sources.ADAPTER_NAME
    x = _images(seed=4)  # ImageNet mean/std-normalised, as the data pipeline feeds
    rgb = x * np.array(tv.IMAGENET_STD) + np.array(tv.IMAGENET_MEAN)
    logits, stages = tv.forward("resnet18", state, (rgb - 0.5) / 0.5)
    _assert_close(_outputs(source, x), [*stages, logits])


def test_without_the_classifier(presets):
    path, _ = presets["resnet18"]
    source = load_source(f"hub:{path}", input_shape=(SIZE, SIZE, 3), include_top=False)
    assert source_taps(source) == TAPS
    assert source.output.shape == (None, 1, 1, 512)
    assert "logits" not in {layer.name for layer in source.layers}


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and error.__cause__ is None and error.__suppress_context__
    return message


def test_offline_hugging_face_preset_is_one_clear_error(monkeypatch, tmp_path):
    from huggingface_hub import constants

    # Offline mode: the client refuses before any request; an empty cache.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SourceWeightsUnavailable) as info:
        load_source("hub:hf://timm/resnet34.tv_in1k")
    message = _one_line(info.value)
    assert message.startswith("Could not fetch the keras-hub preset 'hf://timm/resnet34.tv_in1k'")
    assert "https://huggingface.co/timm/resnet34.tv_in1k" in message
    assert "config.json and model.safetensors" in message
    assert "--source=hub:/path/to/folder" in message


def test_offline_kaggle_preset_is_one_clear_error(monkeypatch):
    import kagglehub

    def offline(handle, path=None, **kwargs):  # what kagglehub raises without network
        raise ConnectionError(
            "Failed to resolve 'api.kaggle.com' ([Errno -2] Name or service not known)"
        )

    monkeypatch.setattr(kagglehub, "model_download", offline)
    for preset in ("kaggle://keras/resnetv1/keras/resnet_50_imagenet/2", "resnet_50_imagenet"):
        with pytest.raises(SourceWeightsUnavailable) as info:
            load_source(f"hub:{preset}")
        message = _one_line(info.value)
        assert "https://www.kaggle.com/models/keras/resnetv1/keras/resnet_50_imagenet" in message
        assert "Failed to resolve 'api.kaggle.com'" in message
        assert "--source=hub:/path/to/folder" in message


def test_a_missing_local_preset_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="No keras-hub preset directory"):
        load_source(f"hub:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="do not pass weights"):
        load_source(f"hub:{tmp_path}", weights="x.h5")
    (tmp_path / "config.json").write_text('{"architecture": "mystery_net"}')
    with pytest.raises(ValueError, match="cannot be loaded as an image classifier"):
        load_source(f"hub:{tmp_path}")
