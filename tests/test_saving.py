"""Round trips: the whole TransferModel through .keras, the target through SavedModel."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from toy_networks import toy_batch, toy_transfer_model

import keras_l2t
from keras_l2t.data import augment
from keras_l2t.exact_batch_norm import is_batch_norm_exact


@pytest.fixture(scope="module")
def trained():
    """One fitted model shared by the tests below, which only read it."""
    model = toy_transfer_model()
    model.compile(meta_optimizer=keras_l2t.TorchAdam(1e-2), metrics=["accuracy"])
    x, y = toy_batch(n=8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    return model, x


def test_transfer_model_round_trips_through_a_keras_file(tmp_path, trained):
    model, x = trained
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_l2t.TransferModel)
    assert loaded.pairs == model.pairs and loaded.method.name == "l2t_ww"
    assert loaded.get_config()["pair_weight_activation"] == "relu6"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    for a, b in zip(model._phi_variables + model._theta_variables,
                    loaded._phi_variables + loaded._theta_variables):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(model.optimizer.momentums, loaded.optimizer.momentums):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # theta optimizer state too
    assert isinstance(loaded.meta_optimizer, keras_l2t.TorchAdam)
    assert loaded.meta_optimizer.learning_rate.numpy() == np.float32(1e-2)
    assert loaded.meta_optimizer.iterations.numpy() == 2  # the meta-optimizer's state too
    for a, b in zip(model.meta_optimizer.variables, loaded.meta_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert is_batch_norm_exact(loaded.target)
    phi = [v.numpy() for v in loaded._phi_variables]
    loaded.fit(x, np.zeros(8, "int32"), batch_size=4, epochs=1, verbose=0)  # still trains
    assert loaded.meta_optimizer.iterations.numpy() == 4
    assert all(not np.allclose(v.numpy(), w) for v, w in zip(loaded._phi_variables, phi))


@pytest.mark.slow
def test_exported_target_serves_in_a_process_without_keras_l2t(tmp_path, trained):
    model, x = trained
    model.export(tmp_path / "served", verbose=False)
    model.target.save(tmp_path / "target.keras")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["keras_l2t"] = None  # importing it would fail: prove it is not needed
        import numpy as np, tensorflow as tf, keras
        x = np.load({str(tmp_path / "x.npy")!r})
        served = tf.saved_model.load({str(tmp_path / "served")!r})
        np.save({str(tmp_path / "served.npy")!r}, served.serve(tf.constant(x)).numpy())
        target = keras.models.load_model({str(tmp_path / "target.keras")!r})
        np.save({str(tmp_path / "keras.npy")!r}, target.predict(x, verbose=0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "keras.npy"), expected, rtol=1e-5, atol=1e-6)


def test_export_of_a_softmax_headed_target_serves_its_probabilities(tmp_path):
    import tensorflow as tf

    from keras_l2t.experiment.export import export_target

    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    target = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    export_target(target, str(tmp_path / "served"), 8)
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(tmp_path / "served"))
    out = served.serve(tf.constant(images))
    pixels = keras.ops.convert_to_numpy(
        keras.ops.stack([augment.eval_transform("pad_crop", 8)(tf.constant(i)) for i in images])
    )
    probabilities = target.predict(pixels, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, rtol=1e-5)
    np.testing.assert_allclose(out["logits"].numpy(), np.log(probabilities), rtol=1e-5)
    empty = served.serve(tf.zeros([0, 5, 7, 3], tf.uint8))  # a request may have no images
    assert empty["probabilities"].shape == (0, 3) and empty["classes"].shape == (0,)


def test_both_exported_signatures_take_an_empty_batch(tmp_path):
    import tensorflow as tf

    from keras_l2t.experiment.export import export_target

    inputs = keras.Input((8, 8, 3))
    features = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    target = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    export_target(target, str(tmp_path / "served"), 8)
    served = tf.saved_model.load(str(tmp_path / "served"))
    pixels = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(served.logits(tf.constant(pixels)).numpy(),
                               keras.ops.convert_to_numpy(target(pixels)), rtol=1e-5, atol=1e-6)
    images = tf.zeros([0, 5, 7, 3], tf.uint8)
    for out in (served.serve(images), served.signatures["serve"](images=images),
                served.signatures["serving_default"](images=images)):
        assert out["logits"].shape == out["probabilities"].shape == (0, 3)
        assert out["classes"].shape == (0,)
    empty = tf.zeros([0, 8, 8, 3], tf.float32)
    assert served.logits(empty).shape == (0, 3)
    assert served.signatures["logits"](args_0=empty)["output_0"].shape == (0, 3)
