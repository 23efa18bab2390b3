"""The meta-optimizer's variables in Keras' JAX training state.

Keras' JAX trainer carries the model's state through its compiled step as four lists
(trainable, non-trainable, optimizer and metric variables) and writes them back at the
end of `fit`. It knows one optimizer; `TransferModel` has two. This mixin appends the
meta-optimizer's variables to the optimizer's list wherever the trainer gathers, purges,
writes back or shards that list, so `_jax_step.train_step` receives and returns both.
Each override calls Keras' own hook for the four lists and adds the meta-optimizer's
part; `_get_state_sharding_spec` keeps Keras' check that no variable was created
outside the distribution's scope, and runs it on the meta-optimizer's variables too.
The hooks are private to `keras.src.backend.jax.trainer.JAXTrainer` (Keras 3.15);
tests/test_keras_internals.py fails when one changes. On TensorFlow they are never
called.

Why not a wrapper optimizer whose `variables` are its own plus the meta-optimizer's, as
Keras' `LossScaleOptimizer` carries its inner optimizer's? The trainer reads the state
from `model.optimizer`, so the wrapper would have to be `model.optimizer`, replacing the
user's optimizer there: callbacks and `fit` would read the wrapper's `learning_rate`,
`iterations` and `use_ema` finalize, and `.keras` files and `train.py` checkpoints,
which store the optimizer's variables under `optimizer`, would change layout, so files
saved by earlier versions would no longer load.

It also mends a gap of that trainer: `fit`, `evaluate` and `predict` take the values out
of the variables for the duration of the loop and put back `_jax_state` at the end. A
step that raised (a ValueError at its first trace, say) put back an older call's
`_jax_state`, which lacks the optimizer's variables after an `evaluate`, or nothing at
all in `evaluate` and `predict`: the model then failed on every later call. Here the
values taken out are the `_jax_state` until a step returns, and `evaluate` and
`predict` put it back on an error as `fit` does.
"""

from __future__ import annotations

import contextlib
import warnings

import keras

_STATE_KEYS = ("trainable_variables", "non_trainable_variables", "optimizer_variables",
               "metrics_variables")


class MetaOptimizerInJaxState:
    """Mixin for a `keras.Model` with a `meta_optimizer` attribute (see module doc)."""

    def _meta_optimizer_variables(self) -> list:
        meta_optimizer = getattr(self, "meta_optimizer", None)
        return list(meta_optimizer.variables) if meta_optimizer is not None else []

    def _all_optimizer_variables(self) -> list:
        """The optimizer's variables, then the meta-optimizer's."""
        variables = list(self.optimizer.variables) if self.optimizer is not None else []
        return variables + self._meta_optimizer_variables()

    def _get_jax_state(self, trainable_variables=False, non_trainable_variables=False,
                       optimizer_variables=False, metrics_variables=False,
                       purge_model_variables=False):
        asked = (trainable_variables, non_trainable_variables, optimizer_variables,
                 metrics_variables)
        meta_variables = self._meta_optimizer_variables() if optimizer_variables else []
        meta_values = [v.value for v in meta_variables]
        state = list(super()._get_jax_state(
            trainable_variables=trainable_variables,
            non_trainable_variables=non_trainable_variables,
            optimizer_variables=optimizer_variables,
            metrics_variables=metrics_variables,
            purge_model_variables=purge_model_variables,
        ))
        if optimizer_variables:
            index = sum(asked[:2])  # the optimizer's list follows those asked before it
            state[index] = list(state[index]) + meta_values
        if purge_model_variables:
            for variable in meta_variables:
                variable._value = None  # as Keras does: the state holds the values
            # What `jax_state_sync` puts back if a step raises before returning its state.
            keys = [key for key, wanted in zip(_STATE_KEYS, asked) if wanted]
            self._jax_state = dict(zip(keys, state))
        return tuple(state)

    def jax_state_sync(self):
        state = getattr(self, "_jax_state", None)
        if not state or self._jax_state_synced:
            return  # as Keras' hook does; always on TensorFlow, which has no JAX state
        count = len(self.optimizer.variables) if self.optimizer is not None else 0
        values = (state.get("optimizer_variables") or [])[count:]
        for variable, value in zip(self._meta_optimizer_variables(), values):
            variable.assign(value)
        super().jax_state_sync()  # the four lists, the optimizer's part of the third

    def _get_state_sharding_spec(self):
        # Keras' own checks that the four lists are all local or all distributed.
        shardings = super()._get_state_sharding_spec()
        meta_variables = self._meta_optimizer_variables()
        meta_shardings = [v.value.sharding for v in meta_variables]
        _check_meta_sharding(meta_variables, meta_shardings, shardings)
        trainable, non_trainable, optimizer, metrics = shardings
        return trainable, non_trainable, list(optimizer) + meta_shardings, metrics

    @contextlib.contextmanager
    def _state_restored_on_error(self):
        try:
            yield
        except BaseException:
            self.jax_state_sync()
            raise

    def evaluate(self, *args, **kwargs):
        with self._state_restored_on_error():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self._state_restored_on_error():
            return super().predict(*args, **kwargs)


def _check_meta_sharding(variables, shardings, other_shardings) -> None:
    """Keras' sharding check, for the meta-optimizer's variables: warns when they are
    local (created outside the distribution's scope) and the model's distributed, or the
    reverse, which `jax.jit` would refuse with "incompatible devices"."""
    import jax

    def is_local(sharding):
        return isinstance(sharding, jax.sharding.SingleDeviceSharding)

    if keras.distribution.distribution() is None:
        return
    kinds = {is_local(s) for group in other_shardings for s in group}
    if len(kinds) != 1:  # no other variables, or a mix that Keras' check warned of
        return
    others_local = kinds.pop()
    odd = [v for v, s in zip(variables, shardings) if is_local(s) != others_local]
    if odd:
        where = ("distributed", "local") if others_local else ("local", "distributed")
        warnings.warn(
            "Detected a mix of local (SingleDeviceSharding) and distributed (mesh-aware) "
            f"variables: the meta-optimizer's variable {odd[0].path!r} is {where[0]}, the "
            f"model's are {where[1]}. jax.jit will refuse the training step with "
            "'Received incompatible devices'. Create the meta-optimizer and the model, "
            "and call compile(), inside the distribution's scope().",
            stacklevel=3,
        )
