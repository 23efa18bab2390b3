"""TransferModel: a target network trained by L2T-ww from a frozen source network."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_l2t import losses, tensorflow_step
from keras_l2t.exact_batch_norm import make_batch_norm_exact
from keras_l2t.features import feature_extractor
from keras_l2t.layers import ChannelWeights, FeatureAdapter, PairWeight
from keras_l2t.methods import get_method
from keras_l2t.optimizers import CoupledSGD
from keras_l2t.pairs import resolve_pairs
from keras_l2t.update_rules import update_rule_for


@keras.saving.register_keras_serializable(package="keras_l2t")
class TransferModel(keras.Model):
    """Trains `target` from scratch while transferring from a frozen, pretrained `source`.

    For every (source layer m, target layer n) pair it owns a 1x1 adapter (part of the
    target's parameters theta) and, depending on `method`, a "what" meta-network (channel
    weights) and a "where" meta-network (pair weight), whose variables phi are trained by
    the meta-gradient of METHOD.md. `call()` is the target's forward alone, so
    `predict`, `evaluate` and `export` see only the target.

    Every BatchNormalization in `target` is switched, in place, to exact second-order
    moments (see `keras_l2t.exact_batch_norm`); LayerNormalization and
    GroupNormalization are refused on TensorFlow.

    Args:
        source: A built functional Keras model, pretrained; frozen and run in inference
            mode.
        target: A functional Keras model whose single output is (batch, classes) logits
            (or probabilities after a softmax).
        pairs: "all", "one_to_one" (with `source_layers` and `target_layers`), or a list
            of (source layer name, target layer name).
        method: "l2t_ww" (learned what and where), "l2t_w" (learned what, lambda 1),
            "fm" (uniform weights, no meta step) or "scratch" (no transfer).
        source_layers: Source layer names for the pair presets.
        target_layers: Target layer names for the pair presets.
        beta: Weight of the feature-matching loss (0.5 in the paper).
        lookahead_steps: T, the lookahead steps on the matching loss (2 in the paper).
        pair_weight_activation: Output type of the "where" network, see `PairWeight`.
        meta_weight_decay: L2 penalty added to the meta-gradient, as the reference's
            `torch.optim.Adam(weight_decay=1e-4)` (coupled, unlike Keras' AdamW-style
            `weight_decay`).
        **kwargs: Standard `keras.Model` arguments (name, ...).

    Example:
        >>> model = TransferModel(source, target, pairs="all",
        ...                       source_layers=["s_block2", "s_block3"],
        ...                       target_layers=["t_block2", "t_block3"])
        >>> model.compile(optimizer=CoupledSGD(0.1), metrics=["accuracy"])
        >>> model.fit(train_ds, validation_data=val_ds, epochs=200)

    Reference:
        Jang, Lee, Hwang, Shin, "Learning What and Where to Transfer", ICML 2019.
    """

    def __init__(
        self,
        source: keras.Model,
        target: keras.Model,
        pairs: str | Sequence[Sequence[str]] = "all",
        method: str = "l2t_ww",
        source_layers: Sequence[str] | None = None,
        target_layers: Sequence[str] | None = None,
        beta: float = 0.5,
        lookahead_steps: int = 2,
        pair_weight_activation: str = "relu6",
        meta_weight_decay: float = 1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.method = get_method(method)
        _check_source(source)
        self.from_logits = _check_target(target)
        _check_precision(target)
        # Losses, adapters and meta-networks run at the target variables' precision, even
        # when the networks compute in bfloat16.
        variables = target.trainable_variables
        self.loss_dtype = variables[0].dtype if variables else keras.config.floatx()
        if lookahead_steps < 1:
            raise ValueError(f"lookahead_steps must be >= 1, got {lookahead_steps}.")
        self.pairs = (
            resolve_pairs(pairs, source_layers, target_layers)
            if self.method.matches_features else []
        )
        self.beta = beta
        self.lookahead_steps = lookahead_steps
        self.pair_weight_activation = pair_weight_activation
        self.meta_weight_decay = meta_weight_decay

        source.trainable = False
        self.source = source
        self.target = target
        self.exact_batch_norm_layers = make_batch_norm_exact(target)

        source_names = list(dict.fromkeys(s for s, _ in self.pairs))
        target_names = list(dict.fromkeys(t for _, t in self.pairs))
        self._pair_source_index = [source_names.index(s) for s, _ in self.pairs]
        self._pair_target_index = [target_names.index(t) for _, t in self.pairs]
        # The tap models share layers and variables with source and target; they are
        # kept out of Keras' tracking so the variables are saved once, under those.
        source_taps = feature_extractor(source, source_names) if self.pairs else None
        object.__setattr__(self, "_source_taps", source_taps)
        object.__setattr__(self, "_target_taps", feature_extractor(target, target_names, True))

        source_shapes = [tuple(t.shape) for t in (source_taps.outputs if self.pairs else [])]
        target_shapes = [tuple(t.shape) for t in self._target_taps.outputs[1:]]
        self.adapters, self.channel_weight_networks, self.pair_weight_networks = [], [], []
        for i, (s, t) in enumerate(zip(self._pair_source_index, self._pair_target_index)):
            channels = source_shapes[s][-1]
            adapter = FeatureAdapter(channels, name=f"adapter_{i}", dtype=self.loss_dtype)
            adapter.build(target_shapes[t])
            self.adapters.append(adapter)
            if self.method.learns_channel_weights:
                network = ChannelWeights(name=f"channel_weights_{i}", dtype=self.loss_dtype)
                network.build((None, channels))
                self.channel_weight_networks.append(network)
            if self.method.learns_pair_weights:
                network = PairWeight(
                    pair_weight_activation, name=f"pair_weight_{i}", dtype=self.loss_dtype
                )
                network.build((None, channels))
                self.pair_weight_networks.append(network)

        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.matching_tracker = keras.metrics.Mean(name="matching_loss")
        self.meta_tracker = keras.metrics.Mean(name="meta_ce") if self.method.meta_learned else None
        # Zero-padded pair indices, so logs list pairs in order: lambda_00, lambda_01, ...
        digits = len(str(max(len(self.pairs) - 1, 0)))
        self.pair_weight_trackers = [
            keras.metrics.Mean(name=f"lambda_{i:0{digits}d}")
            for i in range(len(self.pair_weight_networks))
        ]
        self.entropy_trackers = [
            keras.metrics.Mean(name=f"entropy_{i:0{digits}d}")
            for i in range(len(self.channel_weight_networks))
        ]
        self.built = True

    # ----------------------------------------------------------------- variables
    @property
    def theta_variables(self) -> list:
        """Variables of the target network and the adapters, trained by `optimizer`."""
        adapters = [v for adapter in self.adapters for v in adapter.trainable_variables]
        return list(self._target_taps.trainable_variables) + adapters

    @property
    def phi_variables(self) -> list:
        """Variables of the meta-networks, trained by `meta_optimizer`."""
        networks = self.channel_weight_networks + self.pair_weight_networks
        return [v for network in networks for v in network.trainable_variables]

    @property
    def target_non_trainable_variables(self) -> list:
        """The target's non-trainable state (batch-norm statistics, seeds)."""
        return list(self._target_taps.non_trainable_variables)

    # ------------------------------------------------------------------- compile
    def compile(self, optimizer=None, meta_optimizer=None, metrics=None, **kwargs):
        """Configures training.

        Args:
            optimizer: Optimizer of theta (target and adapters). Default: the reference's
                `CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4)`. Must be
                `keras_l2t.optimizers.CoupledSGD` or `keras.optimizers.SGD`, whose
                update the lookahead replays exactly.
            meta_optimizer: Optimizer of phi (meta-networks). Default: Adam(1e-4).
            metrics: Metrics on (labels, target outputs), e.g. ["accuracy"].
            **kwargs: Other `keras.Model.compile` arguments. `loss` is not accepted:
                the model computes cross-entropy and the matching loss itself.
        """
        if kwargs.pop("loss", None) is not None:
            raise ValueError(
                "TransferModel computes its losses itself (cross-entropy of the target "
                "plus the weighted feature-matching loss); do not pass loss= to compile()."
            )
        super().compile(
            optimizer=optimizer if optimizer is not None else CoupledSGD(),
            metrics=metrics,
            **kwargs,
        )
        self.meta_optimizer = keras.optimizers.get(
            meta_optimizer if meta_optimizer is not None else keras.optimizers.Adam(1e-4)
        )
        self.update_rule = update_rule_for(self.optimizer, self.theta_variables)
        # Built here, under the caller's strategy scope, not lazily inside fit().
        self.optimizer.build(self.theta_variables)
        if self.phi_variables:
            self.meta_optimizer.build(self.phi_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config["meta_optimizer"] = keras.saving.serialize_keras_object(self.meta_optimizer)
        return config

    def compile_from_config(self, config):
        """Recompiles a loaded model. The meta-optimizer's configuration is restored, not
        its state: a `.keras` file holds one optimizer's variables (resume from a
        checkpoint to keep both)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    # ------------------------------------------------------------------- forward
    def call(self, inputs, training=None):
        return self.target(inputs, training=training)

    def pair_inputs(self, x) -> list[tuple]:
        """Runs the frozen source once and prepares each pair's source side.

        Returns:
            Per pair, (source map resized to the target map's size, pooled source map).
        """
        if not self.pairs:
            return []
        source_maps = _as_list(self._source_taps(x, training=False))
        target_shapes = self._target_taps.outputs[1:]
        prepared = []
        for s, t in zip(self._pair_source_index, self._pair_target_index):
            source_map = ops.cast(ops.stop_gradient(source_maps[s]), self.loss_dtype)
            prepared.append(
                (losses.resize_to(source_map, target_shapes[t]), ops.mean(source_map, axis=(1, 2)))
            )
        return prepared

    def pair_weights(self, pair_inputs: list[tuple]) -> tuple[list, list]:
        """Channel weights w and pair weights lambda of every pair, from phi.

        Returns:
            (list of (batch, C) channel weights, list of (batch,) pair weights); uniform
            1/C and 1 where the method does not learn them.
        """
        channel_weights, pair_weights = [], []
        for i, (_, pooled) in enumerate(pair_inputs):
            if self.method.learns_channel_weights:
                channel_weights.append(self.channel_weight_networks[i](pooled))
            else:
                channel_weights.append(ops.ones_like(pooled) / ops.shape(pooled)[-1])
            if self.method.learns_pair_weights:
                pair_weights.append(self.pair_weight_networks[i](pooled))
            else:
                pair_weights.append(ops.ones_like(pooled[:, 0]))
        return channel_weights, pair_weights

    def student_forward(self, x, theta=None, non_trainable=None, with_adapters=True):
        """The target in training mode, with its adapted feature maps.

        Args:
            x: Input batch.
            theta: Values for `theta_variables`; None uses the variables themselves (and
                updates the batch-norm statistics, as a real step does).
            non_trainable: Values for `target_non_trainable_variables` when `theta` is
                given; the batch-norm statistics this forward computes are dropped.
            with_adapters: Whether to compute the adapted maps.

        Returns:
            (logits, list of adapted target maps, one per pair).
        """
        if theta is None:
            outputs = self._target_taps(x, training=True)
            adapter_weights = [None] * len(self.adapters)
        else:
            count = len(self._target_taps.trainable_variables)
            outputs, _ = self._target_taps.stateless_call(
                theta[:count], non_trainable, x, training=True
            )
            adapter_weights = [theta[count + 2 * i: count + 2 * i + 2]
                               for i in range(len(self.adapters))]
        logits, *maps = _as_list(outputs)
        logits = ops.cast(logits, self.loss_dtype)
        if not with_adapters:
            return logits, []
        adapted = []
        for adapter, t, weights in zip(self.adapters, self._pair_target_index, adapter_weights):
            if weights is None:
                adapted.append(adapter(maps[t]))
            else:
                adapted.append(adapter.stateless_call(weights, [], maps[t])[0])
        return logits, adapted

    def cross_entropy(self, y, logits):
        """Per-example cross-entropy of the target's outputs."""
        return losses.cross_entropy(y, logits, from_logits=self.from_logits)

    def per_example_losses(self, y, logits, adapted, pair_inputs, channel_weights, pair_weights):
        """Per-example L_org and L_wfm (summed over pairs)."""
        ce = self.cross_entropy(y, logits)
        matching = ops.zeros_like(ce)
        for (source_map, _), target_map, w, lam in zip(
            pair_inputs, adapted, channel_weights, pair_weights
        ):
            matching = matching + losses.weighted_feature_matching(
                source_map, target_map, w, lam, self.beta
            )
        return ce, matching

    # ---------------------------------------------------------- train and test
    def train_step(self, data):
        x, y = _unpack(data)
        ce, matching, logits, channel_weights, pair_weights, meta_loss = (
            tensorflow_step.train_step(self, x, y)
        )
        self._loss_tracker.update_state(ce + matching)
        self.ce_tracker.update_state(ce)
        self.matching_tracker.update_state(matching)
        if meta_loss is not None:
            self.meta_tracker.update_state(meta_loss)
        for tracker, lam in zip(self.pair_weight_trackers, pair_weights):
            tracker.update_state(lam)
        for tracker, w in zip(self.entropy_trackers, channel_weights):
            tracker.update_state(losses.entropy(w))
        return self.compute_metrics(x, y, logits)

    def meta_gradient(self, x, y, second_order: bool = True):
        """d L_org(theta_{T+1}) / d phi at the current state, changing nothing.

        The lookahead starts from the current theta, momentum buffers and learning rate,
        as it does right after the real step of `train_step`.

        Args:
            x: Input batch.
            y: Labels.
            second_order: False treats the lookahead's gradients as constants (the
                first-order approximation, which gives exactly zero).

        Returns:
            (meta objective L_org(theta_{T+1}), gradients aligned with `phi_variables`).
        """
        if not self.method.meta_learned:
            raise ValueError(f"Method '{self.method.name}' has no meta-networks.")
        if not self.compiled:
            raise ValueError("Call compile() first: the lookahead replays the optimizer.")
        x = ops.convert_to_tensor(x)
        batch = tensorflow_step.global_batch_size(x, self.loss_dtype)
        return tensorflow_step.meta_gradient(
            self, x, ops.convert_to_tensor(y), self.pair_inputs(x),
            ops.convert_to_tensor(self.optimizer.learning_rate), batch, second_order,
        )

    def test_step(self, data):
        x, y = _unpack(data)
        outputs = self(x, training=False)
        self._loss_tracker.update_state(self.cross_entropy(y, outputs))
        self._compile_metrics.update_state(y, outputs)
        return {"loss": self._loss_tracker.result(), **self._compile_metrics.result()}

    # --------------------------------------------------------- export and save
    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Exports the target network alone (the source and meta-networks stay behind)."""
        return self.target.export(filepath, format=format, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "source": keras.saving.serialize_keras_object(self.source),
            "target": keras.saving.serialize_keras_object(self.target),
            "pairs": [list(pair) for pair in self.pairs] or "all",
            "method": self.method.name,
            "beta": self.beta,
            "lookahead_steps": self.lookahead_steps,
            "pair_weight_activation": self.pair_weight_activation,
            "meta_weight_decay": self.meta_weight_decay,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("source", "target"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _as_list(outputs) -> list:
    """A functional model with one output returns a tensor, not a one-element list."""
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _unpack(data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError("TransferModel does not support sample weights.")
    if y is None:
        raise ValueError("TransferModel.fit needs labels: give (images, labels) batches.")
    return x, y


def _check_source(source) -> None:
    if not isinstance(source, keras.Model):
        raise ValueError(f"source must be a keras.Model, got {type(source).__name__}.")
    if not source.built:
        raise ValueError(
            f"The source model '{source.name}' is not built: it has no weights yet. Load "
            "the pretrained model (or build it on an input shape) before passing it."
        )


def _check_precision(target) -> None:
    """Refuses float16 targets: their gradients need loss scaling, and the second-order
    meta-gradient would underflow silently. bfloat16 (mixed_bfloat16) is accepted."""
    for layer in target._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.dtype_policy.compute_dtype == "float16":
            raise ValueError(
                f"Target layer '{layer.name}' computes in float16 (policy "
                f"'{layer.dtype_policy.name}'). float16 gradients need loss scaling, which the "
                "second-order L2T-ww meta-gradient cannot get exactly; build the target under "
                "'mixed_bfloat16' or 'float32' instead (a float16 source is fine)."
            )


def _check_target(target) -> bool:
    """Checks the target has one (batch, classes) output; returns whether it is logits."""
    if not isinstance(target, keras.Model):
        raise ValueError(f"target must be a keras.Model, got {type(target).__name__}.")
    try:
        outputs = target.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        raise ValueError(
            f"The target model '{target.name}' is not a built functional model; build it "
            "with the functional API so its feature maps can be tapped by name."
        )
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        shapes = [tuple(o.shape) for o in outputs]
        raise ValueError(
            f"The target model '{target.name}' must end in a classification head with one "
            f"(batch, classes) output; its outputs have shapes {shapes}. Add e.g. "
            "GlobalAveragePooling2D and Dense(num_classes)."
        )
    last = outputs[0]._keras_history.operation
    activation = getattr(last, "activation", None)
    is_softmax = isinstance(last, keras.layers.Softmax) or activation in (
        keras.activations.softmax, "softmax"
    )
    return not is_softmax
