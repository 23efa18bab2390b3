"""Bad input fails before training, with a message that says what to do."""

import keras
import pytest
from toy_networks import conv_net, toy_batch, toy_transfer_model

import keras_l2t
from keras_l2t.features import feature_map_layers


@pytest.fixture
def networks():
    return conv_net("src", [3, 4], 5), conv_net("tgt", [2, 3], 3)


def test_unknown_layer_name_lists_the_valid_ones(networks):
    source, target = networks
    with pytest.raises(ValueError, match=r"target model 'tgt' has no layer named "
                       r"'tgt_block9'.*'tgt_block0'") as error:
        keras_l2t.TransferModel(source, target, pairs=[("src_block0", "tgt_block9")])
    assert error.value.role == "target"
    with pytest.raises(ValueError, match=r"The source model 'src' has no layer named 'x'"):
        keras_l2t.TransferModel(source, target, pairs=[("x", "tgt_block0")])


def test_pair_layer_that_is_not_a_feature_map(networks):
    source, target = networks
    with pytest.raises(ValueError, match=r"'tgt_head'.*\(None, 3\), not a 4-D feature map"):
        keras_l2t.TransferModel(source, target, pairs=[("src_block0", "tgt_head")])


def test_target_without_a_classification_output(networks):
    source, _ = networks
    inputs = keras.Input((8, 8, 3))
    maps = keras.layers.Conv2D(2, 3, name="t_conv")(inputs)
    with pytest.raises(ValueError, match="classification head.*GlobalAveragePooling2D"):
        keras_l2t.TransferModel(source, keras.Model(inputs, maps), pairs=[("src_block0", "t_conv")])


def test_source_that_is_not_built(networks):
    _, target = networks

    class Source(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="source model 'source' is not built"):
        keras_l2t.TransferModel(Source(name="source"), target, pairs=[("a", "tgt_block0")])


def test_subclassed_source_cannot_be_tapped(networks):
    _, target = networks

    class Source(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    source = Source()
    source(keras.ops.ones((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="not a built functional.*functional API"):
        keras_l2t.TransferModel(source, target, pairs=[("conv2d", "tgt_block0")])


def test_bad_method_pairs_and_compile_arguments(networks):
    source, target = networks
    with pytest.raises(ValueError, match=r"Unknown method 'l2t'.*'l2t_ww'"):
        keras_l2t.TransferModel(source, target, method="l2t")
    with pytest.raises(ValueError, match="pairs='all' needs source_layers"):
        keras_l2t.TransferModel(source, target, pairs="all")
    with pytest.raises(ValueError, match="one_to_one' needs as many"):
        keras_l2t.TransferModel(source, target, pairs="one_to_one",
                                source_layers=["src_block0"],
                                target_layers=["tgt_block0", "tgt_block1"])
    model = toy_transfer_model()
    with pytest.raises(ValueError, match="do not pass loss="):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="knows the rule of .*not RMSprop"):
        model.compile(optimizer="rmsprop")
    for arguments in (dict(optimizer=keras_l2t.CoupledSGD(loss_scale_factor=128.0)),
                      dict(meta_optimizer=keras.optimizers.LossScaleOptimizer(
                          keras.optimizers.Adam()))):
        with pytest.raises(ValueError, match="unscales gradients.*does not scale its losses"):
            model.compile(**arguments)
    with pytest.raises(ValueError, match="pairs is empty"):
        keras_l2t.TransferModel(source, target, pairs=[])
    with pytest.raises(ValueError, match="lookahead_steps must be an integer >= 1, got 1.5"):
        keras_l2t.TransferModel(source, target, lookahead_steps=1.5)
    with pytest.raises(ValueError, match="meta_every must be an integer >= 1, got 0"):
        keras_l2t.TransferModel(source, target, meta_every=0)
    with pytest.raises(ValueError, match="meta_every=4 needs a method with meta-networks "
                                         r"\(l2t_ww, l2t_w\), not 'fm'"):
        keras_l2t.TransferModel(source, target, method="fm", meta_every=4)
    with pytest.raises(ValueError, match="meta_objective must be one of train_batch, "
                                         "held_out, got 'validation'"):
        keras_l2t.TransferModel(source, target, pairs="all", source_layers=["src_block0"],
                                target_layers=["tgt_block0"], meta_objective="validation")
    with pytest.raises(ValueError, match="'held_out' needs a method with meta-networks.*'at'"):
        keras_l2t.TransferModel(source, target, method="at", pairs="one_to_one",
                                source_layers=["src_block0"], target_layers=["tgt_block0"],
                                meta_objective="held_out")


def test_target_maps_of_unknown_size_are_refused_by_name(networks):
    source, _ = networks
    inputs = keras.Input((None, None, 3))
    maps = keras.layers.Conv2D(2, 3, padding="same", name="t_conv")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(maps))
    target = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"'t_conv' has feature maps of unknown size "
                                         r"NonexNone.*keras.Input\(\(height, width"):
        keras_l2t.TransferModel(source, target, pairs=[("src_block0", "t_conv")])


def test_a_nested_backbone_is_tapped_at_its_output_not_inside(networks):
    source, _ = networks
    backbone = conv_net("backbone", [2, 3], 3)
    backbone = keras.Model(backbone.inputs, backbone.get_layer("backbone_block1").output,
                           name="backbone")
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    target = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    assert feature_map_layers(target) == ["backbone"]
    with pytest.raises(ValueError, match="inside the nested model 'backbone'.*input_tensor"):
        keras_l2t.TransferModel(source, target, pairs=[("src_block1", "backbone_block0")])
    model = keras_l2t.TransferModel(source, target, pairs=[("src_block1", "backbone")])
    model.compile()
    x, y = toy_batch(n=4)
    before = [v.numpy().copy() for v in backbone.trainable_variables]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert any((b != v.numpy()).any() for b, v in zip(before, backbone.trainable_variables))
