"""Every private Keras name keras-l2t uses, each with a test that fails when Keras changes it.

Run this file first when trying a new Keras release. Each name, where it is used, and
why no public API does the job:

- `JAXTrainer._get_jax_state`: `keras_l2t/_jax_state.py` (override),
  `benchmarks/flop_count.py`. Where the JAX trainer gathers its state, which the
  meta-optimizer's variables must join (a wrapper optimizer cannot: see `_jax_state`).
- `JAXTrainer.jax_state_sync`: `_jax_state.py` (override), `tests/test_train_step.py`.
  Writes the state back into the variables; undocumented.
- `JAXTrainer._get_state_sharding_spec`: `_jax_state.py` (override). The shardings of
  the jitted step's state.
- `JAXTrainer._jax_state`, `JAXTrainer._jax_state_synced`: `_jax_state.py`. The state
  between steps, which the hooks above read and write.
- `Variable._value`: `_jax_state.py`. Set to None to free a value the JAX state holds,
  as Keras' own purge does.
- `Optimizer._get_variable_index`: `keras_l2t/optimizers.py` (`update_step`). A
  variable's index inside `update_step`, as Keras' own optimizers find it.
- `Optimizer._use_weight_decay`: `keras_l2t/_update_rules.py`. Which variables Keras'
  SGD decays (`exclude_from_weight_decay`), for the lookahead's replay.
- `Layer._flatten_layers`: `keras_l2t/exact_batch_norm.py`, `keras_l2t/_network_checks.py`.
  Every layer of a network, those of nested models included.
- `KerasTensor._keras_history`: `_network_checks.py`. The layer that produced a
  functional model's output (is it a softmax? what does the head read?).
- `Layer._inbound_nodes`: `keras_l2t/features.py`. A nested model's output tensor in
  the outer model's graph.
- `keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE`: `tests/conftest.py`
  (`float64`). Lifted so that JAX keeps float64 results for the finite differences.
- `keras.src.applications.resnet`: `tests/networks/test_sources.py`. The weight files'
  hashes and URL, to pin keras-l2t's copy of them.

`TransferModel.metrics` also relies on Keras' own loss tracker being named "loss" (as
the keras-io custom `train_step` guides do), checked below too.
"""

import inspect

import keras
import numpy as np
import pytest
from backends import BACKEND

jax_only = pytest.mark.skipif(BACKEND != "jax", reason="JAX only: Keras' JAX trainer")


def _parameters(function) -> list:
    return list(inspect.signature(function).parameters)


def _jax_trainer():
    from keras.src.backend.jax.trainer import JAXTrainer

    return JAXTrainer


@jax_only
def test_jax_trainer_state_hooks_keep_their_signatures():
    trainer = _jax_trainer()
    assert _parameters(trainer._get_jax_state) == [
        "self", "trainable_variables", "non_trainable_variables", "optimizer_variables",
        "metrics_variables", "purge_model_variables",
    ]
    assert _parameters(trainer.jax_state_sync) == ["self"]
    assert _parameters(trainer._get_state_sharding_spec) == ["self"]


@jax_only
def test_jax_trainer_keeps_its_state_in_jax_state_between_steps():
    """What the overrides read: `_jax_state` holds the four lists by these keys, and
    `_jax_state_synced` says whether the variables hold them; the sharding spec is
    the four lists' shardings."""
    from keras_l2t._jax_state import _STATE_KEYS

    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((set(self.model._jax_state), type(self.model._jax_state_synced)))

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), batch_size=2, verbose=0,
              callbacks=[Record()])
    assert seen == [(set(_STATE_KEYS), bool)] * 2
    assert model._jax_state is None  # cleared at the end of fit
    assert len(model._get_state_sharding_spec()) == len(_STATE_KEYS)


@jax_only
def test_jax_trainer_purges_values_through_variable_value():
    """Keras' purge sets `variable._value = None`; assigning the variable restores it."""
    source = inspect.getsource(_jax_trainer()._purge_model_variables)
    assert "v._value = None" in source
    variable = keras.Variable(1.0)
    variable._value = None
    variable.assign(2.0)
    assert float(variable.numpy()) == 2.0


def test_optimizer_variable_index_and_weight_decay_hooks():
    variables = [keras.Variable(np.zeros(2), name="kernel"), keras.Variable(np.zeros(3))]
    optimizer = keras.optimizers.SGD(weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["kernel"])
    optimizer.build(variables)
    assert _parameters(optimizer._get_variable_index) == ["variable"]
    assert [optimizer._get_variable_index(v) for v in reversed(variables)] == [1, 0]
    assert _parameters(optimizer._use_weight_decay) == ["variable"]
    assert [optimizer._use_weight_decay(v) for v in variables] == [False, True]


def test_layer_graph_internals():
    """`_flatten_layers` walks nested models; `_keras_history.operation` is the layer
    that made a tensor; a nested model's one call is its single `_inbound_nodes` entry."""
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")],
                             name="inner")
    head = keras.layers.Dense(2, name="head")
    outer = keras.Model(inputs, head(inner(inputs)))
    names = [layer.name for layer in outer._flatten_layers(include_self=True, recursive=True)]
    assert names[0] == outer.name and {"inner", "inner_dense", "head"} <= set(names)
    assert outer.outputs[0]._keras_history.operation is head
    (node,) = inner._inbound_nodes
    assert node.output_tensors[0] is head.input


def test_float64_demotion_table():
    from keras.src.backend.common import dtypes

    expected = "float32" if BACKEND == "jax" else "float64"  # Keras demotes on JAX only
    assert dtypes.BIT64_TO_BIT32_DTYPE["float64"] == expected


def test_resnet_weight_constants():
    from keras.src.applications import resnet

    assert isinstance(resnet.WEIGHTS_HASHES, dict) and resnet.BASE_WEIGHTS_PATH


def test_keras_loss_tracker_is_named_loss():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    assert [m.name for m in model.metrics][0] == "loss"
