"""The meta-optimizer's variables in Keras' JAX training state.

Keras' JAX trainer carries the model's state through its compiled step as four lists
(trainable, non-trainable, optimizer and metric variables) and writes them back at the
end of `fit`. It knows one optimizer; `TransferModel` has two. This mixin appends the
meta-optimizer's variables to the optimizer's list wherever the trainer gathers, purges,
writes back or shards that list, so `jax_step.train_step` receives and returns both.
The methods override private hooks of `keras.src.backend.jax.trainer.JAXTrainer`
(Keras 3.15); on TensorFlow they are never called (`evaluate` and `predict`
below find no `_jax_state` there and only pass through).

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


class MetaOptimizerInJaxState:
    """Mixin for a `keras.Model` with a `meta_optimizer` attribute (see module doc)."""

    def _all_optimizer_variables(self) -> list:
        """The optimizer's variables, then the meta-optimizer's."""
        variables = list(self.optimizer.variables) if self.optimizer is not None else []
        meta_optimizer = getattr(self, "meta_optimizer", None)
        return variables + (list(meta_optimizer.variables) if meta_optimizer else [])

    def _state_groups(self) -> dict[str, list]:
        """The trainer's four state lists, by their `_jax_state` key, in its order."""
        return {
            "trainable_variables": self.trainable_variables,
            "non_trainable_variables": self.non_trainable_variables,
            "optimizer_variables": self._all_optimizer_variables(),
            "metrics_variables": self.metrics_variables,
        }

    def _get_jax_state(self, trainable_variables=False, non_trainable_variables=False,
                       optimizer_variables=False, metrics_variables=False,
                       purge_model_variables=False):
        asked = (trainable_variables, non_trainable_variables, optimizer_variables,
                 metrics_variables)
        groups = {k: v for (k, v), wanted in zip(self._state_groups().items(), asked) if wanted}
        state = {key: [v.value for v in variables] for key, variables in groups.items()}
        if purge_model_variables:
            self._jax_state = state  # what `jax_state_sync` puts back on an error
            for variables in groups.values():
                for variable in variables:
                    variable._value = None  # as Keras does: the state holds the values
        return tuple(state.values())

    def jax_state_sync(self):
        if not getattr(self, "_jax_state", None) or self._jax_state_synced:
            return
        for key, variables in self._state_groups().items():
            for variable, value in zip(variables, self._jax_state.get(key) or []):
                variable.assign(value)
        self._jax_state_synced = True

    def _get_state_sharding_spec(self):
        return tuple(
            [v.value.sharding for v in variables] for variables in self._state_groups().values()
        )

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
