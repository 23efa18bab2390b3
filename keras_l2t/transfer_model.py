"""TransferModel: a target network trained from a frozen source by L2T-ww or a baseline."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_l2t import losses
from keras_l2t._jax_state import MetaOptimizerInJaxState
from keras_l2t._network_checks import (
    check_precision,
    check_source,
    check_target,
    outputs_logits,
    penultimate_features,
)
from keras_l2t._steps import as_list, step_module, unpack, unpack_training
from keras_l2t._update_rules import update_rule_for
from keras_l2t.exact_batch_norm import make_batch_norm_exact
from keras_l2t.features import LayerNameError, feature_map_output
from keras_l2t.layers import ChannelWeights, FeatureAdapter, PairWeight
from keras_l2t.methods import get_method
from keras_l2t.optimizers import CoupledSGD, TorchAdam
from keras_l2t.pairs import resolve_pairs, source_of

# The batch the meta objective is computed on; see `TransferModel`'s `meta_objective`.
META_OBJECTIVES = ("train_batch", "held_out")
# How the source's tapped maps are scaled; see `TransferModel`'s `source_normalization`.
SOURCE_NORMALIZATIONS = ("none", "rms")
# When the real step applies the transfer terms' gradient; see `transfer_gate`.
TRANSFER_GATES = ("none", "aligned")
# How the "where" networks' pair weights are scaled; see `pair_weight_normalization`.
PAIR_WEIGHT_NORMALIZATIONS = ("none", "mean")
# The loss terms of the target's own task; every other term is transfer.
TASK_TERMS = ("ce", "regularization")


class SourceOutputs(NamedTuple):
    """The frozen source's side of one batch, computed once.

    Attributes:
        maps: Per pair, the source map resized to the target map's size.
        pooled: Per pair, the global average pool of the source map (meta-network input).
        logits: The source's output as logits (LwF only), else None.
    """

    maps: list
    pooled: list
    logits: object = None


class TargetOutputs(NamedTuple):
    """The target's forward in training mode.

    Attributes:
        logits: (batch, classes) outputs of the target.
        maps: Per pair, the target's feature map.
        adapted: Per pair, the target map after its 1x1 adapter (feature matching only).
        distillation_logits: The extra LwF head's outputs, else None.
        regularization: The target's own losses (weight regularizers, `add_loss`) of
            this forward, summed; None when it has none.
    """

    logits: object
    maps: list
    adapted: list
    distillation_logits: object = None
    regularization: object = None


@keras.saving.register_keras_serializable(package="keras_l2t")
class TransferModel(MetaOptimizerInJaxState, keras.Model):
    """Trains `target` from scratch while transferring from a frozen, pretrained `source`.

    `source` may also be several pretrained networks by name; pairs then name their
    source ("name/layer"), and the "where" networks choose between sources too (not in
    the paper or the reference code, which take one source).

    For every (source layer m, target layer n) pair it owns a 1x1 adapter (part of the
    target's parameters theta) and, depending on `method`, a "what" meta-network (channel
    weights) and a "where" meta-network (pair weight), whose variables phi are trained by
    the meta-gradient of the paper. The baselines of the paper's table are selected by
    `method` too (see `keras_l2t.methods.METHODS`). `call()` is the target's forward
    alone, so `predict`, `evaluate` and `export` see only the target.

    Every BatchNormalization in `target` is switched, in place, to exact second-order
    moments (see `keras_l2t.exact_batch_norm`); LayerNormalization and
    GroupNormalization are refused on TensorFlow.

    Runs on the TensorFlow and JAX backends (`KERAS_BACKEND`): the method's math lives
    here, and one small module per backend runs the iteration (`_tensorflow_step`,
    `_jax_step`).

    Args:
        source: A built functional Keras model, pretrained; frozen and run in inference
            mode, once per batch. Or a dict of such models by name, e.g.
            `{"imagenet": resnet, "xray": cnn}`: each takes the batch's images (put the
            normalisation a source needs inside it, as `keras_l2t.sources.load_source`
            does), and each with pairs runs once per batch; names may not contain "/".
        target: A functional Keras model whose single output is (batch, classes) logits
            (or probabilities after a softmax).
        pairs: "all", "one_to_one", "single" (with `source_layers` and
            `target_layers`), or a list of (source layer name, target layer name). None
            takes the method's default preset. With several sources a source layer is
            "name/layer" (in `source_layers` too), or a pair is (source name, source
            layer name, target layer name); "all" then spans every source's layers and
            "single" pairs each source's last layer with the last target layer (see
            `keras_l2t.pairs.resolve_pairs`).
        method: "l2t_ww" (learned what and where), "l2t_w" (learned what, lambda 1),
            "fm" (uniform weights, no meta step), "at", "lwf", "lwf_at" or "scratch".
        source_layers: Source layer names for the pair presets ("name/layer" with
            several sources).
        target_layers: Target layer names for the pair presets.
        beta: Weight of the feature-matching loss (0.5 in the paper): a number, or a
            `keras.optimizers.schedules.LearningRateSchedule` of the target optimizer's
            iteration count, e.g. `CosineDecay(0.5, total_steps)` to fade transfer out
            as training ends (a schedule is not in the paper or the reference code).
        lookahead_steps: T, the lookahead steps on the matching loss (2 in the paper).
        pair_weight_activation: Output type of the "where" network, see `PairWeight`.
        meta_weight_decay: L2 penalty added to the meta-gradient, as the reference's
            `torch.optim.Adam(weight_decay=1e-4)` (coupled, unlike Keras' AdamW-style
            `weight_decay`).
        attention_beta: Weight of the attention-transfer loss (1000, as AT); a number
            or a schedule, as `beta`.
        distillation_temperature: LwF's softening temperature (2, as LwF).
        distillation_weight: Weight of LwF's distillation loss (1, as LwF).
        meta_objective: The batch the meta objective L_org(theta_{T+1}) is computed on:
            "train_batch", the real step's own batch (the paper), or "held_out", a batch
            of a held-out meta split. With "held_out", `fit` takes elements
            `((x, y), (x_meta, y_meta))`, e.g. `tf.data.Dataset.zip((train, meta))`
            with `meta` repeating; the lookahead still trains on (x, y).
        source_normalization: "none" (the paper) or "rms": each example's tapped source
            map is divided by its root mean square (over positions and channels), so
            the matching losses and the meta-networks' inputs have the same scale
            whatever the source's activations are (a source whose maps are 10x larger
            otherwise weighs its matching loss 100x more, and starts its "where"
            networks far from lambda = 1). Not in the paper or the reference code.
        meta_every: k: the lookahead and meta step run on every k-th iteration (those
            whose target-optimizer iteration count, before the step, is a multiple of
            k), the others are the real step alone with phi fixed; 1 (the paper): every
            iteration. Read from the optimizer's counter, so a resumed run,
            `steps_per_execution` and JAX's `DataParallel` keep the schedule; one
            compiled step holds both branches (a multi-replica `tf.distribute` strategy
            refuses k > 1). `meta_ce` then averages the meta iterations only. Not in
            the paper or the reference code.
        pair_weight_normalization: "none" (the paper) or "mean": each example's pair
            weights are divided by their mean over the pairs, lambda_i <- lambda_i /
            mean_j(lambda_j), so the "where" networks choose where to transfer but not
            how much in all (that stays beta, as with uniform weights). Needs learned
            pair weights (l2t_ww). Not in the paper or the reference code.
        transfer_gate: "none" (the paper): the real step always follows the gradient of
            L_org + beta * L_wfm. "aligned": it follows the transfer terms' gradient
            g_tr only on iterations where <g_ref, g_tr> > 0, g_ref being the gradient
            of L_org on the meta objective's batch (the training batch, or the held-out
            one); on the others it follows L_org's gradient alone. To first order in
            the learning rate, the transfer's part of the step then lowers that
            batch's classification loss whenever it is taken (Du et al., "Adapting
            Auxiliary Losses Using Gradient Similarity", 2018). The logs add
            `transfer_cosine` (cos(g_ref, g_tr)) and `transfer_on` (the fraction of
            iterations taken). Costs a second backward pass through the target (and a
            third, with a forward, on a held-out batch). The meta step is unchanged.
            Not in the paper or the reference code.
        transfer_gate_momentum: m in [0, 1), with `transfer_gate="aligned"`: the gate
            opens where a_t = m * a_{t-1} + (1 - m) * cos(g_ref, g_tr) > 0 (a_0 = 0),
            an exponential moving average over about 1 / (1 - m) iterations, so it
            follows the average alignment rather than one batch's sign; 0 (the
            default): each iteration's own sign. a_t is a non-trainable variable of
            the model (saved with it). Not in the paper or the reference code.
        **kwargs: Standard `keras.Model` arguments (name, ...).

    Raises:
        ValueError: A layer name that is not in its network (the message lists the valid
            ones), a source layer without its source's name (several sources), an
            unknown source name, LwF with several sources, an unknown method, preset,
            meta objective, transfer gate (or a gate for "scratch", or a gate momentum
            outside [0, 1) or without a gate) or pair weight normalization (or one
            without learned pair weights), `lookahead_steps < 1` or
            `meta_every < 1` (or above 1 for a method without meta-networks), a
            target without a (batch, classes) head or a fixed image size, a float16
            target, or LayerNormalization/GroupNormalization in the target on TensorFlow.

    Example:
        >>> import keras
        >>> import numpy as np
        >>> from keras_l2t import TransferModel
        >>> def network(name, classes):
        ...     inputs = keras.Input((8, 8, 3))
        ...     x = keras.layers.Conv2D(4, 3, activation="relu", name=f"{name}_block")(inputs)
        ...     x = keras.layers.GlobalAveragePooling2D()(x)
        ...     return keras.Model(inputs, keras.layers.Dense(classes)(x))
        >>> model = TransferModel(network("s", 5), network("t", 3),
        ...                       pairs=[("s_block", "t_block")])
        >>> model.compile(metrics=["accuracy"])  # then model.fit(images, labels, ...)
        >>> model.pairs
        [('s_block', 't_block')]
        >>> tuple(model(np.zeros((2, 8, 8, 3), "float32")).shape)  # the target's forward
        (2, 3)

    Reference:
        Jang, Lee, Hwang, Shin, "Learning What and Where to Transfer", ICML 2019.
    """

    def __init__(
        self,
        source: keras.Model | Mapping[str, keras.Model],
        target: keras.Model,
        pairs: str | Sequence[Sequence[str]] | None = None,
        method: str = "l2t_ww",
        source_layers: Sequence[str] | None = None,
        target_layers: Sequence[str] | None = None,
        beta: float = 0.5,
        lookahead_steps: int = 2,
        pair_weight_activation: str = "relu6",
        meta_weight_decay: float = 1e-4,
        attention_beta: float = 1000.0,
        distillation_temperature: float = 2.0,
        distillation_weight: float = 1.0,
        meta_objective: str = "train_batch",
        meta_every: int = 1,
        source_normalization: str = "none",
        transfer_gate: str = "none",
        pair_weight_normalization: str = "none",
        transfer_gate_momentum: float = 0.0,
        **kwargs,
    ):
        step_module()  # refuses an unsupported backend before any work
        super().__init__(**kwargs)
        self.method = get_method(method)
        sources = _named_sources(source)
        for model in sources.values():
            check_source(model)
        self._from_logits = check_target(target)
        check_precision(target)
        if meta_objective not in META_OBJECTIVES:
            raise ValueError(f"meta_objective must be one of {', '.join(META_OBJECTIVES)}, got "
                             f"{meta_objective!r}.")
        if source_normalization not in SOURCE_NORMALIZATIONS:
            raise ValueError(
                f"source_normalization must be one of {', '.join(SOURCE_NORMALIZATIONS)}, "
                f"got {source_normalization!r}.")
        if transfer_gate not in TRANSFER_GATES:
            raise ValueError(f"transfer_gate must be one of {', '.join(TRANSFER_GATES)}, got "
                             f"{transfer_gate!r}.")
        if transfer_gate != "none" and self.method.name == "scratch":
            raise ValueError(f"transfer_gate={transfer_gate!r} gates a method's transfer "
                             "terms; 'scratch' has none.")
        if isinstance(transfer_gate_momentum, bool) or not isinstance(
                transfer_gate_momentum, numbers.Real) or not 0 <= transfer_gate_momentum < 1:
            raise ValueError("transfer_gate_momentum must be a number in [0, 1), got "
                             f"{transfer_gate_momentum!r}.")
        if transfer_gate_momentum and transfer_gate == "none":
            raise ValueError(f"transfer_gate_momentum={transfer_gate_momentum} averages the "
                             "gate's alignment; set transfer_gate='aligned' too.")
        if pair_weight_normalization not in PAIR_WEIGHT_NORMALIZATIONS:
            raise ValueError(
                "pair_weight_normalization must be one of "
                f"{', '.join(PAIR_WEIGHT_NORMALIZATIONS)}, got {pair_weight_normalization!r}.")
        if pair_weight_normalization != "none" and not self.method.learns_pair_weights:
            raise ValueError(f"pair_weight_normalization={pair_weight_normalization!r} needs "
                             f"learned pair weights (l2t_ww), not '{self.method.name}'.")
        if meta_objective != "train_batch" and not self.method.meta_learned:
            raise ValueError(f"meta_objective={meta_objective!r} needs a method with "
                             f"meta-networks (l2t_ww, l2t_w), not '{self.method.name}'.")
        if isinstance(lookahead_steps, bool) or not isinstance(
            lookahead_steps, numbers.Integral
        ) or lookahead_steps < 1:
            raise ValueError(f"lookahead_steps must be an integer >= 1, got {lookahead_steps!r}.")
        for name, value in (("beta", beta), ("attention_beta", attention_beta)):
            if isinstance(value, bool) or not isinstance(
                value, numbers.Real | keras.optimizers.schedules.LearningRateSchedule
            ):
                raise ValueError(
                    f"{name} must be a number or a keras.optimizers.schedules."
                    f"LearningRateSchedule (e.g. CosineDecay), got {value!r}.")
        if isinstance(meta_every, bool) or not isinstance(meta_every, numbers.Integral) or (
                meta_every < 1):
            raise ValueError(f"meta_every must be an integer >= 1, got {meta_every!r}.")
        if meta_every > 1 and not self.method.meta_learned:
            raise ValueError(f"meta_every={meta_every} needs a method with meta-networks "
                             f"(l2t_ww, l2t_w), not '{self.method.name}'.")
        # Losses, adapters and meta-networks run at the target variables' precision, even
        # when the networks compute in bfloat16.
        variables = target.trainable_variables
        self._loss_dtype = variables[0].dtype if variables else keras.config.floatx()
        self.pairs = (
            resolve_pairs(self.method.default_pairs if pairs is None else pairs,
                          source_layers, target_layers)
            if self.method.uses_pairs else []
        )
        self.beta = beta
        self.lookahead_steps = int(lookahead_steps)
        self.pair_weight_activation = pair_weight_activation
        self.meta_weight_decay = meta_weight_decay
        self.attention_beta = attention_beta
        self.distillation_temperature = distillation_temperature
        self.distillation_weight = distillation_weight
        self.meta_objective = meta_objective
        self.source_normalization = source_normalization
        self.meta_every = int(meta_every)
        self.transfer_gate = transfer_gate
        self.pair_weight_normalization = pair_weight_normalization
        self.transfer_gate_momentum = float(transfer_gate_momentum)
        # a_t of the averaged gate, one value for all replicas; None for the paper's step
        # and the per-iteration gate, whose saved weights it would change.
        self._transfer_alignment = self.add_weight(
            shape=(), initializer="zeros", dtype=self._loss_dtype, trainable=False,
            name="transfer_alignment", aggregation="only_first_replica",
        ) if self.transfer_gate_momentum else None

        for model in sources.values():
            model.trainable = False
        self.source = source  # as given: one model (saved as before) or a dict of them
        object.__setattr__(self, "_sources", sources)  # by name; "" for a single model
        self.target = target
        self.exact_batch_norm_layers = make_batch_norm_exact(target)
        self._build_taps()
        self._build_pair_modules()
        self._build_trackers()
        self.built = True

    def _build_taps(self):
        """Models returning the outputs the method needs; they share source's and target's
        layers and are kept out of Keras' tracking, so variables are saved once."""
        source_names = list(dict.fromkeys(s for s, _ in self.pairs))
        target_names = list(dict.fromkeys(t for _, t in self.pairs))
        layers_by_source = self._layers_by_source(source_names)
        self._pair_source_index = [source_names.index(s) for s, _ in self.pairs]
        self._pair_target_index = [target_names.index(t) for _, t in self.pairs]
        # The pairs that share a source (target) layer: their meta-networks (adapters)
        # read the same input and run as one stacked kernel (`call_stacked`).
        self._pairs_by_source = _group(self._pair_source_index)
        self._pairs_by_target = _group(self._pair_target_index)
        distills = self.method.distills_outputs

        # One taps model per source with pairs, and the positions in `source_names` of
        # its outputs (LwF's class outputs last).
        source_taps, source_outputs = [], [None] * len(source_names)
        for name, layers in layers_by_source.items():
            model = self._sources[name]
            try:
                outputs = [feature_map_output(model, layer, "source") for _, layer in layers]
            except LayerNameError as error:  # say which source, its model name may repeat
                raise (LayerNameError(f"Source '{name}': {error}", "source") if name
                       else error) from None
            for (position, _), output in zip(layers, outputs):
                source_outputs[position] = output
            if distills:
                check_target(model, role="source")  # LwF distils its class outputs
                outputs.append(model.outputs[0])
            suffix = f"_{name}" if name else ""
            taps = keras.Model(model.inputs[0], outputs, name=f"source_taps{suffix}")
            source_taps.append((taps, [position for position, _ in layers]))
        target_outputs = [self.target.outputs[0]]
        if distills:
            target_outputs.append(penultimate_features(self.target))
        target_outputs += [feature_map_output(self.target, n, "target") for n in target_names]
        target_taps = keras.Model(self.target.inputs[0], target_outputs, name="target_taps")
        object.__setattr__(self, "_source_taps", source_taps)
        object.__setattr__(self, "_target_taps", target_taps)
        self._target_shapes = [tuple(t.shape) for t in target_outputs[1 + distills:]]
        self._source_shapes = [tuple(t.shape) for t in source_outputs]
        for name, shape in zip(target_names, self._target_shapes):
            if None in shape[1:3]:  # source maps are resized to it when the graph is built
                raise ValueError(
                    f"Target layer '{name}' has feature maps of unknown size "
                    f"{shape[1]}x{shape[2]}: the source's maps are resized to the target's, "
                    "which needs a fixed image size. Build the target on "
                    "keras.Input((height, width, channels))."
                )

    def _layers_by_source(self, source_layers: list[str]) -> dict[str, list]:
        """The (position, layer name) of each of `source_layers` by source name, every
        source with pairs listed; for LwF (no pairs) the one source with no layers."""
        if self.method.distills_outputs and len(self._sources) > 1:
            raise ValueError(
                f"Method '{self.method.name}' distils one source's class outputs; pass a "
                f"single source model, not {len(self._sources)} "
                f"({', '.join(self._sources)}).")
        by_source: dict[str, list] = (
            {name: [] for name in self._sources} if self.method.distills_outputs else {})
        several = "" not in self._sources
        for position, qualified in enumerate(source_layers):
            name = source_of(qualified) if several else ""
            if name not in self._sources:
                raise LayerNameError(
                    f"Source layer '{qualified}' "
                    + (f"names the source '{name}', which is not one of " if name else
                       "does not name its source: with several sources write "
                       "'name/layer', the names being ")
                    + f"{', '.join(self._sources)}.", "source")
            layer = qualified[len(name) + 1:] if several else qualified
            by_source.setdefault(name, []).append((position, layer))
        return by_source

    def _build_pair_modules(self):
        self.adapters, self.channel_weight_networks, self.pair_weight_networks = [], [], []
        matching_pairs = self.pairs if self.method.matches_features else []
        for i in range(len(matching_pairs)):
            s, t = self._pair_source_index[i], self._pair_target_index[i]
            channels = self._source_shapes[s][-1]
            adapter = FeatureAdapter(channels, name=f"adapter_{i}", dtype=self._loss_dtype)
            adapter.build(self._target_shapes[t])
            self.adapters.append(adapter)
            if self.method.learns_channel_weights:
                network = ChannelWeights(name=f"channel_weights_{i}", dtype=self._loss_dtype)
                network.build((None, channels))
                self.channel_weight_networks.append(network)
            if self.method.learns_pair_weights:
                network = PairWeight(
                    self.pair_weight_activation, name=f"pair_weight_{i}", dtype=self._loss_dtype
                )
                network.build((None, channels))
                self.pair_weight_networks.append(network)
        self.distillation_head = None
        if self.method.distills_outputs:
            source = next(iter(self._sources.values()))
            self.distillation_head = keras.layers.Dense(
                source.outputs[0].shape[-1], name="distillation_head", dtype=self._loss_dtype
            )
            self.distillation_head.build(penultimate_features(self.target).shape)

    def _build_trackers(self):
        """The model's own metrics, kept as the keras-io custom `train_step` guides keep
        them: the loss, then the training logs' terms (see `metrics`)."""
        mean = keras.metrics.Mean
        self._loss_metric = mean(name="loss")
        self._ce_tracker = mean(name="ce")
        self._term_trackers = {}
        if self.method.matches_features:
            self._term_trackers["matching"] = mean(name="matching_loss")
        if self.method.matches_attention:
            self._term_trackers["attention"] = mean(name="attention_loss")
        if self.method.distills_outputs:
            self._term_trackers["distillation"] = mean(name="distillation_loss")
        self._meta_tracker = mean(name="meta_ce") if self.method.meta_learned else None
        self._gate_trackers = (
            [mean(name="transfer_cosine"), mean(name="transfer_on")]
            if self.transfer_gate != "none" else [])
        # Zero-padded pair indices, so logs list pairs in order: lambda_00, lambda_01, ...
        digits = len(str(max(len(self.pairs) - 1, 0)))
        self._pair_weight_trackers = [
            mean(name=f"lambda_{i:0{digits}d}") for i in range(len(self.pair_weight_networks))
        ]
        self._entropy_trackers = [
            mean(name=f"entropy_{i:0{digits}d}")
            for i in range(len(self.channel_weight_networks))
        ]

    def _training_trackers(self) -> list:
        """The trackers of the training logs' terms, in the logs' order."""
        meta = [self._meta_tracker] if self._meta_tracker is not None else []
        return [self._ce_tracker, *self._term_trackers.values(), *meta, *self._gate_trackers,
                *self._pair_weight_trackers, *self._entropy_trackers]

    @property
    def metrics(self):
        """The loss, the compiled metrics, then the training terms' trackers.

        Keras' own loss tracker, which this model never feeds (it computes its losses
        itself), is left out.
        """
        own = self._training_trackers()
        compiled = [m for m in super().metrics
                    if m.name != "loss" and all(m is not o for o in own)]
        return [self._loss_metric, *compiled, *own]

    # ----------------------------------------------------------------- variables
    @property
    def _theta_variables(self) -> list:
        """Variables trained by `optimizer`: the target, the adapters, the LwF head."""
        modules = self.adapters + ([self.distillation_head] if self.distillation_head else [])
        extra = [v for module in modules for v in module.trainable_variables]
        return list(self._target_taps.trainable_variables) + extra

    @property
    def _phi_variables(self) -> list:
        """Variables of the meta-networks, trained by `meta_optimizer`."""
        networks = self.channel_weight_networks + self.pair_weight_networks
        return [v for network in networks for v in network.trainable_variables]

    @property
    def _target_non_trainable_variables(self) -> list:
        """The target's non-trainable state (batch-norm statistics, seeds)."""
        return list(self._target_taps.non_trainable_variables)

    # ------------------------------------------------------------------- compile
    def compile(self, optimizer=None, meta_optimizer=None, metrics=None, **kwargs):
        """Configures training.

        Args:
            optimizer: Optimizer of theta (target and adapters). Default: the reference's
                `CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4)`. For the meta-learned
                methods it must be `keras_l2t.optimizers.CoupledSGD` or
                `keras.optimizers.SGD`, whose update the lookahead replays exactly.
            meta_optimizer: Optimizer of phi (meta-networks). Default: the reference's
                `TorchAdam(1e-4)` (`torch.optim.Adam`'s epsilon, see `TorchAdam`).
            metrics: Metrics on (labels, target outputs), e.g. ["accuracy"].
            **kwargs: Other `keras.Model.compile` arguments. `loss` is not accepted:
                the model computes its losses itself.

        Raises:
            ValueError: for `loss=`, an optimizer with loss scaling (`loss_scale_factor`,
                `LossScaleOptimizer`), or, for the meta-learned methods, an `optimizer`
                whose update the lookahead cannot replay (see `_update_rules`).
        """
        if kwargs.pop("loss", None) is not None:
            raise ValueError(
                "TransferModel computes its losses itself (cross-entropy of the target "
                "plus the method's transfer loss); do not pass loss= to compile()."
            )
        optimizer = keras.optimizers.get(optimizer if optimizer is not None else CoupledSGD())
        meta_optimizer = keras.optimizers.get(
            meta_optimizer if meta_optimizer is not None else TorchAdam(1e-4)
        )
        for argument, value in (("optimizer", optimizer), ("meta_optimizer", meta_optimizer)):
            _refuse_loss_scaling(argument, value)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.meta_optimizer = meta_optimizer
        if self.method.meta_learned:
            self._update_rule = update_rule_for(self.optimizer, self._theta_variables)
        # Built here, under the caller's strategy scope, not lazily inside fit().
        self.optimizer.build(self._theta_variables)
        if self._phi_variables:
            self.meta_optimizer.build(self._phi_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config["meta_optimizer"] = keras.saving.serialize_keras_object(self.meta_optimizer)
        return config

    def compile_from_config(self, config):
        """Recompiles a loaded model with both optimizers, before Keras restores their
        state (the meta-optimizer is an attribute of the model, so `.keras` files and
        `save_weights` hold its variables too)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    # ------------------------------------------------------------------- forward
    def call(self, inputs, training=None):
        return self.target(inputs, training=training)

    def _source_outputs(self, x) -> SourceOutputs:
        """Runs each frozen source with pairs once for the batch and prepares each pair's
        source side."""
        if not self._source_taps:
            return SourceOutputs([], [])
        outputs = [None] * len(self._source_shapes)
        logits = None
        for taps, positions in self._source_taps:
            values = [ops.cast(ops.stop_gradient(o), self._loss_dtype)
                      for o in as_list(taps(x, training=False))]
            if self.method.distills_outputs:  # one source (see `_layers_by_source`)
                logits = values.pop()
                if not outputs_logits(next(iter(self._sources.values()))):
                    logits = ops.log(ops.maximum(logits, 1e-12))  # softmax(log p/T) ~ p^(1/T)
            for position, value in zip(positions, values):
                outputs[position] = value
        if self.source_normalization == "rms":
            outputs = [losses.rms_normalized(o) for o in outputs]
        maps = [
            losses.resize_to(outputs[s], self._target_shapes[t][1:3])
            for s, t in zip(self._pair_source_index, self._pair_target_index)
        ]
        pooled = [ops.mean(outputs[s], axis=(1, 2)) for s in self._pair_source_index]
        return SourceOutputs(maps, pooled, logits)

    def _transfer_weights(self, source: SourceOutputs) -> tuple[list, list]:
        """Channel weights w and pair weights lambda of every feature-matching pair.

        Returns:
            (list of (batch, C) channel weights, list of (batch,) pair weights), from phi;
            uniform 1/C and 1 where the method does not learn them.
        """
        if not self.method.matches_features:
            return [], []
        channel_weights, pair_weights = [None] * len(self.pairs), [None] * len(self.pairs)
        for indices in self._pairs_by_source:
            pooled = source.pooled[indices[0]]  # the same for every pair of the group
            if self.method.learns_channel_weights:
                channel = ChannelWeights.call_stacked(
                    [self.channel_weight_networks[i] for i in indices], pooled)
            else:
                channel = [ops.ones_like(pooled) / ops.shape(pooled)[-1]] * len(indices)
            if self.method.learns_pair_weights:
                pair = PairWeight.call_stacked(
                    [self.pair_weight_networks[i] for i in indices], pooled)
            else:
                pair = [ops.ones_like(pooled[:, 0])] * len(indices)
            for i, w, lam in zip(indices, channel, pair):
                channel_weights[i], pair_weights[i] = w, lam
        if self.pair_weight_normalization == "mean":  # a fixed budget, spread by "where"
            mean = ops.mean(ops.stack(pair_weights), axis=0)
            pair_weights = [lam / ops.maximum(mean, 1e-12) for lam in pair_weights]
        return channel_weights, pair_weights

    def _target_outputs(self, x, theta=None, non_trainable=None,
                        adapters: bool = True) -> TargetOutputs:
        """The target in training mode, with what the method's losses read.

        Args:
            x: Input batch.
            theta: Values for `_theta_variables`; None uses the variables themselves (and
                updates the batch-norm statistics, as a real step does).
            non_trainable: Values for `_target_non_trainable_variables` when `theta` is
                given; the batch-norm statistics this forward computes are dropped.
            adapters: Whether to compute the adapted maps (not needed for L_org alone).

        Returns:
            A `TargetOutputs`.
        """
        modules = self.adapters + ([self.distillation_head] if self.distillation_head else [])
        taps = self._target_taps
        count = len(taps.trainable_variables)
        stateful = theta is None
        if stateful:
            theta = [v.value for v in taps.trainable_variables]
            non_trainable = [v.value for v in taps.non_trainable_variables]
        outputs, new_state, target_losses = self._target_taps_at(theta[:count], non_trainable, x)
        if stateful:  # the real step keeps its batch-norm statistics
            for variable, value in zip(taps.non_trainable_variables, new_state):
                variable.assign(value)
            weights = [None] * len(modules)
        else:
            weights = [theta[count + 2 * i: count + 2 * i + 2] for i in range(len(modules))]
        regularization = (
            sum(ops.cast(loss, self._loss_dtype) for loss in target_losses)
            if target_losses else None
        )

        outputs = as_list(outputs)
        logits = ops.cast(outputs.pop(0), self._loss_dtype)
        distillation_logits = None
        if self.distillation_head is not None:
            head, head_weights = self.distillation_head, weights[-1]
            distillation_logits = (
                head(outputs.pop(0)) if head_weights is None
                else head.stateless_call(head_weights, [], outputs.pop(0))[0]
            )
        maps = [outputs[t] for t in self._pair_target_index]
        adapted = self._adapted(maps, weights) if adapters and self.adapters else []
        return TargetOutputs(logits, maps, adapted, distillation_logits, regularization)

    def _adapted(self, maps: list, weights: list) -> list:
        """Every pair's target map through its adapter, one stacked product per target
        layer; `weights[i]` is adapter i's (kernel, bias) values, or None for its
        variables."""
        kernels = [w[0] if w is not None else a.kernel for a, w in zip(self.adapters, weights)]
        biases = [w[1] if w is not None else a.bias for a, w in zip(self.adapters, weights)]
        adapted = [None] * len(self.adapters)
        for indices in self._pairs_by_target:
            outputs = FeatureAdapter.call_stacked(
                maps[indices[0]], [kernels[i] for i in indices], [biases[i] for i in indices]
            )
            for i, output in zip(indices, outputs):
                adapted[i] = output
        return adapted

    def _target_taps_at(self, trainable: list, non_trainable: list, x):
        """The target's taps in training mode at the given variable values.

        Returns:
            (outputs, new non-trainable values, the target's own losses: those its layers
            add in this call, then its weight regularizers at `trainable`).

        Unlike `stateless_call(return_losses=True)`, the added losses are read from this
        call's own scope, not filtered through the layers' shared loss ids, which the
        replica threads of a MirroredStrategy clear under each other.
        """
        taps = self._target_taps
        state = taps.non_trainable_variables
        mapping = list(zip(taps.trainable_variables, trainable)) + list(zip(state, non_trainable))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = taps(x, training=True)
        regularizers = [
            variable.regularizer(value)
            for variable, value in zip(taps.trainable_variables, trainable)
            if variable.regularizer is not None
        ]
        return outputs, [scope.get_current_value(v) for v in state], scope.losses + regularizers

    def _cross_entropy(self, y, logits):
        """Per-example cross-entropy of the target's outputs."""
        return losses.cross_entropy(y, logits, from_logits=self._from_logits)

    def _betas(self, iteration=None) -> tuple:
        """(beta, attention_beta) at the target optimizer's `iteration` (its count before
        the step; None reads the optimizer): the numbers given, or their schedules' values.
        """
        values = []
        for value in (self.beta, self.attention_beta):
            if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
                step = self.optimizer.iterations if iteration is None else iteration
                value = ops.cast(value(step), self._loss_dtype)
            values.append(value)
        return tuple(values)

    def _loss_terms(self, y, target: TargetOutputs, source: SourceOutputs,
                    channel_weights: list, pair_weights: list, betas: tuple | None = None
                    ) -> dict:
        """Per-example loss terms of the method: "ce", and "matching" (L_wfm summed over
        pairs), "attention" and "distillation" where the method uses them, and
        "regularization" where the target has its own losses (see `_regularization`).
        `betas` is `_betas()` at the step's iteration (None: at the optimizer's)."""
        beta, attention_beta = self._betas() if betas is None else betas
        ce = self._cross_entropy(y, target.logits)
        terms = {"ce": ce}
        if target.regularization is not None:
            terms["regularization"] = self._regularization(target, ce)
        if self.method.matches_features:
            terms["matching"] = sum(
                (losses.weighted_feature_matching(s, t, w, lam, beta)
                 for s, t, w, lam in zip(source.maps, target.adapted, channel_weights,
                                         pair_weights)),
                ops.zeros_like(ce),
            )
        if self.method.matches_attention:
            terms["attention"] = sum(
                (losses.attention_transfer(s, ops.cast(t, self._loss_dtype), attention_beta)
                 for s, t in zip(source.maps, target.maps)),
                ops.zeros_like(ce),
            )
        if self.method.distills_outputs:
            terms["distillation"] = self.distillation_weight * losses.distillation(
                source.logits, target.distillation_logits, self.distillation_temperature
            )
        return terms

    @staticmethod
    def _regularization(target: TargetOutputs, per_example):
        """The target's own losses as a per-example term (the same value for each).

        Keras adds a model's regularization losses to its objective; here they join the
        real step and every lookahead step, like the optimizer's weight decay (the
        reference's networks have none). Spread over the examples, their sum over a
        global batch divided by its size is the regularization once, on any number of
        replicas.
        """
        return ops.zeros_like(per_example) + target.regularization

    def _real_step_loss(self, x, y, source: SourceOutputs, channel_weights: list,
                        pair_weights: list, betas: tuple, batch):
        """The real step's objective: all of the method's terms, with the target's
        variables (so a training-mode forward updates the batch-norm statistics).

        Returns:
            (summed loss / `batch`, per-example terms, target logits).
        """
        target = self._target_outputs(x)
        terms = self._loss_terms(y, target, source, channel_weights, pair_weights, betas)
        return ops.sum(sum(terms.values())) / batch, terms, target.logits

    @staticmethod
    def _task_and_transfer(terms: dict, batch) -> tuple:
        """(the target's own loss, the transfer terms' loss) of the real step's `terms`,
        each summed over the batch and divided by `batch`; together, its loss."""
        task = sum(v for name, v in terms.items() if name in TASK_TERMS)
        transfer = sum(v for name, v in terms.items() if name not in TASK_TERMS)
        return ops.sum(task) / batch, ops.sum(transfer) / batch

    def _gated_gradients(self, task: list, transfer: list, reference: list,
                         reference_transfer: list | None = None, previous=0.0) -> tuple:
        """The real step's gradients under `transfer_gate="aligned"`.

        Args:
            task: dL_org/dtheta of the real step's batch (the step's own share of it).
            transfer: d(beta * L_wfm + ...)/dtheta, the transfer terms' (its share).
            reference: dL_org/dtheta on the meta objective's batch, global.
            reference_transfer: the global transfer gradient, where `transfer` is one
                replica's share (None: `transfer` itself).
            previous: a_{t-1}, the averaged alignment before this iteration (with
                `transfer_gate_momentum` > 0).

        Returns:
            (task + open * transfer, cos(reference, transfer), open, a_t), where
            a_t = m * a_{t-1} + (1 - m) * cos and open is 1 if a_t > 0, else 0 (with
            m = 0: if <reference, transfer> > 0).
        """
        reference_transfer = transfer if reference_transfer is None else reference_transfer
        dot = sum(ops.sum(r * g) for r, g in zip(reference, reference_transfer))
        norm = ops.sqrt(sum(ops.sum(r * r) for r in reference)) * ops.sqrt(
            sum(ops.sum(g * g) for g in reference_transfer))
        cosine = dot / ops.maximum(norm, 1e-30)
        momentum = self.transfer_gate_momentum
        alignment = momentum * previous + (1.0 - momentum) * cosine
        taken = ops.cast(alignment > 0, dot.dtype)
        gradients = [t + ops.cast(taken, g.dtype) * g for t, g in zip(task, transfer)]
        return gradients, cosine, taken, alignment

    def _matching_objective(self, params, x, y, source: SourceOutputs, weights: tuple,
                            betas: tuple, non_trainable, batch):
        """L_wfm(theta) of one lookahead step, at `params` (values of `_theta_variables`).

        `weights` is (channel weights, pair weights) from phi, computed once per meta step;
        `betas` those of the real step.
        """
        target = self._target_outputs(x, params, non_trainable)
        terms = self._loss_terms(y, target, source, *weights, betas)
        return ops.sum(terms["matching"] + terms.get("regularization", 0.0)) / batch

    def _classification_objective(self, params, x, y, non_trainable, batch):
        """L_org(theta) at `params`: the lookahead's last step and the meta objective."""
        target = self._target_outputs(x, params, non_trainable, adapters=False)
        ce = self._cross_entropy(y, target.logits)
        if target.regularization is not None:
            ce = ce + self._regularization(target, ce)
        return ops.sum(ce) / batch

    def _lookahead_objectives(self, x, y, source: SourceOutputs, weights: tuple,
                              betas: tuple, non_trainable, batch) -> list:
        """The lookahead's T steps on L_wfm, then one on L_org, as functions of theta."""

        def matching(params):
            return self._matching_objective(params, x, y, source, weights, betas,
                                            non_trainable, batch)

        def classification(params):
            return self._classification_objective(params, x, y, non_trainable, batch)

        return [matching] * self.lookahead_steps + [classification]

    # ---------------------------------------------------------- train and test
    def fit(self, *args, **kwargs):
        """`keras.Model.fit`. At its end a meta-optimizer built with `use_ema=True`
        writes its moving average into phi, as Keras' fit does for the optimizer and
        the trainable weights.

        With `meta_objective="held_out"`, `x` is a `tf.data.Dataset` or a
        `keras.utils.PyDataset` of `((x, y), (x_meta, y_meta))` elements.
        """
        self._build_held_out_metrics(kwargs.get("x", args[0] if args else None))
        history = super().fit(*args, **kwargs)
        if self.meta_optimizer.use_ema and self._phi_variables and history.epoch:
            self.meta_optimizer.finalize_variable_values(self._phi_variables)
        return history

    def train_on_batch(self, x, y=None, *args, **kwargs):
        """`keras.Model.train_on_batch`; with `meta_objective="held_out"`, call it as
        `train_on_batch((x, y), (x_meta, y_meta))`."""
        self._build_held_out_metrics((x, y))
        return super().train_on_batch(x, y, *args, **kwargs)

    def _build_held_out_metrics(self, data) -> None:
        """Builds the compiled metrics on the training part of a held-out element, before
        Keras' own build, which would read `((x, y), (x_meta, y_meta))` as inputs x and
        labels y."""
        if self.meta_objective != "held_out" or all(
            getattr(m, "built", True) for m in super().metrics
        ):
            return
        if hasattr(data, "element_spec"):  # a tf.data.Dataset: zeros of its spec
            data = keras.tree.map_structure(
                lambda spec: np.zeros([d or 1 for d in spec.shape], spec.dtype.as_numpy_dtype),
                data.element_spec,
            )
        elif isinstance(data, keras.utils.PyDataset):
            data = data[0]
        elif not isinstance(data, list | tuple):
            raise ValueError(
                "meta_objective='held_out': fit takes a tf.data.Dataset or a "
                "keras.utils.PyDataset of ((x, y), (x_meta, y_meta)) elements, got "
                f"{type(data).__name__}. Build the compiled metrics yourself first "
                "(model.compute_metrics(x, y, model(x)) on one batch) to pass another kind."
            )
        x, y, _, _ = unpack_training(data, held_out=True)
        step_module().build_metrics(self, x, y)

    def train_step(self, *args):
        """One L2T-ww iteration, as the backend's trainer calls it: `(data)` on
        TensorFlow, `(state, data)` on JAX (see `_tensorflow_step` / `_jax_step`)."""
        return step_module().train_step(self, *args)

    def _record_step(self, x, y, terms: dict, logits, channel_weights: list,
                     pair_weights: list, meta_loss, meta_taken=None, gate=None) -> dict:
        """Updates the loss, lambda, entropy and compiled metrics; returns the logs.

        `meta_taken` (with `meta_every` > 1): 1 on an iteration with a meta step, 0 on
        one without, whose `meta_loss` (0) the meta tracker then leaves out. `gate`
        (with a `transfer_gate`): (cosine, 1 if the transfer was applied else 0).
        """
        for tracker, value in zip(self._gate_trackers, gate or ()):
            tracker.update_state(value)
        self._loss_metric.update_state(sum(terms.values()))
        self._ce_tracker.update_state(terms["ce"])
        for name, tracker in self._term_trackers.items():
            tracker.update_state(terms[name])
        if meta_loss is not None:
            self._meta_tracker.update_state(meta_loss, sample_weight=meta_taken)
        for tracker, lam in zip(self._pair_weight_trackers, pair_weights):
            tracker.update_state(lam)
        for tracker, w in zip(self._entropy_trackers, channel_weights):
            tracker.update_state(losses.entropy(w))
        return self.compute_metrics(x, y, logits)

    def meta_gradient(self, x, y, second_order: bool = True, meta_batch=None):
        """d L_org(theta_{T+1}) / d phi at the current state, changing nothing.

        The lookahead starts from the current theta, momentums and learning rate.
        Right after a `train_step` that is where its own lookahead started, except the
        rate: `train_step` replays the rate of the real step it took, which a schedule
        may have moved on since (by one iteration).

        Args:
            x: Input batch.
            y: Labels.
            second_order: False treats the lookahead's gradients as constants (the
                first-order approximation, which gives exactly zero).
            meta_batch: (x_meta, y_meta), the batch of L_org(theta_{T+1}); needed with
                `meta_objective="held_out"`, else (x, y).

        Returns:
            (meta objective L_org(theta_{T+1}), gradients aligned with the trainable
            variables of `channel_weight_networks`, then of `pair_weight_networks`).
        """
        if not self.method.meta_learned:
            raise ValueError(f"Method '{self.method.name}' has no meta-networks.")
        if not self.compiled:
            raise ValueError("Call compile() first: the lookahead replays the optimizer.")
        if meta_batch is None and self.meta_objective == "held_out":
            raise ValueError("meta_objective='held_out': pass meta_batch=(x_meta, y_meta).")
        x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
        x_meta, y_meta = (x, y) if meta_batch is None else map(ops.convert_to_tensor,
                                                                  meta_batch)
        return step_module().meta_gradient(self, x, y, x_meta, y_meta, second_order)

    def test_step(self, *args):
        """Cross-entropy and metrics of the target: `(data)` on TensorFlow, `(state, data)`
        on JAX."""
        return step_module().test_step(self, *args)

    def _record_test(self, data) -> dict:
        """Updates the loss (the cross-entropy alone) and the compiled metrics with one
        evaluation batch; returns their logs."""
        x, y = unpack(data)
        outputs = self(x, training=False)
        self._loss_metric.update_state(self._cross_entropy(y, outputs))
        logs = self.compute_metrics(x, y, outputs)
        training = {tracker.name for tracker in self._training_trackers()}
        return {name: value for name, value in logs.items() if name not in training}

    # --------------------------------------------------------- export and save
    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Exports the target network alone (the source and meta-networks stay behind).

        Args:
            filepath: Output directory.
            format: "tf_saved_model" (needs TensorFlow installed, on any backend) or
                another format of `keras.Model.export`.
            **kwargs: Other `keras.Model.export` arguments.

        Then `tf.saved_model.load(filepath).serve(images)` runs the target.
        """
        return self.target.export(filepath, format=format, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "source": (
                {name: keras.saving.serialize_keras_object(model)
                 for name, model in self._sources.items()}
                if "" not in self._sources else
                keras.saving.serialize_keras_object(self.source)),
            "target": keras.saving.serialize_keras_object(self.target),
            "pairs": [list(pair) for pair in self.pairs] or None,
            "method": self.method.name,
            "beta": _serialize_strength(self.beta),
            "lookahead_steps": self.lookahead_steps,
            "pair_weight_activation": self.pair_weight_activation,
            "meta_weight_decay": self.meta_weight_decay,
            "attention_beta": _serialize_strength(self.attention_beta),
            "distillation_temperature": self.distillation_temperature,
            "distillation_weight": self.distillation_weight,
            "meta_objective": self.meta_objective,
            "meta_every": self.meta_every,
            "source_normalization": self.source_normalization,
            "transfer_gate": self.transfer_gate,
            "transfer_gate_momentum": self.transfer_gate_momentum,
            "pair_weight_normalization": self.pair_weight_normalization,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["target"] = keras.saving.deserialize_keras_object(config["target"])
        source = config["source"]
        several = all(isinstance(value, dict) for value in source.values())
        config["source"] = (
            {name: keras.saving.deserialize_keras_object(value)
             for name, value in source.items()}
            if several else keras.saving.deserialize_keras_object(source))
        for key in ("beta", "attention_beta"):
            if isinstance(config.get(key), dict):  # a schedule
                config[key] = keras.optimizers.schedules.deserialize(config[key])
        return cls(**config)


def _named_sources(source) -> dict[str, keras.Model]:
    """`source` by name: {"": source} for one model, else the dict, checked."""
    if not isinstance(source, Mapping):
        return {"": source}
    if not source:
        raise ValueError("source is an empty dict; give at least one source model.")
    for name in source:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(
                f"Source names must be non-empty strings without '/' (pairs write "
                f"'name/layer'), got {name!r}.")
    return dict(source)


def _group(indices: list[int]) -> list[list[int]]:
    """Positions of equal values, grouped, in order of first appearance:
    `[0, 1, 0] -> [[0, 2], [1]]`."""
    groups: dict[int, list[int]] = {}
    for position, value in enumerate(indices):
        groups.setdefault(value, []).append(position)
    return list(groups.values())


def _serialize_strength(value):
    """A loss weight for the config: the number, or the schedule's config."""
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        return keras.optimizers.schedules.serialize(value)
    return value


def _refuse_loss_scaling(argument: str, optimizer: keras.optimizers.Optimizer) -> None:
    """Loss scaling (for float16) would shrink every update: the steps never scale the
    losses, since float16 targets are refused (mixed_bfloat16 needs no scaling)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or (
        optimizer.loss_scale_factor is not None
    ):
        raise ValueError(
            f"{argument}={type(optimizer).__name__}(...) unscales gradients (loss_scale_factor "
            "or LossScaleOptimizer, for float16), but TransferModel does not scale its "
            "losses: float16 targets are refused and mixed_bfloat16 needs no scaling. "
            "Create the optimizer without loss scaling."
        )

