"""Named feature maps out of any functional Keras model."""

from __future__ import annotations

from collections.abc import Sequence

import keras


def feature_map_layers(model: keras.Model) -> list[str]:
    """Returns the names of the layers of `model` whose output is a 4-D feature map.

    Args:
        model: A functional or Sequential Keras model.

    Returns:
        Layer names in graph order, for layers whose single output has shape
        (batch, height, width, channels); a nested model counts as one layer.

    Example:
        >>> import keras
        >>> from keras_l2t.features import feature_map_layers
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        >>> x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        >>> feature_map_layers(keras.Model(inputs, x))
        ['conv']
    """
    check_functional(model)
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        output = _single_output(layer)
        if output is not None and len(output.shape) == 4:
            names.append(layer.name)
    return names


def feature_extractor(
    model: keras.Model, layer_names: Sequence[str], include_output: bool = False
) -> keras.Model:
    """Builds a model that returns the outputs of the named layers of `model`.

    The new model shares layers and variables with `model`: nothing is copied.

    Args:
        model: A functional or Sequential Keras model (subclassed models have no
            graph to tap and are rejected).
        layer_names: Names of layers with 4-D outputs (batch, height, width, channels).
        include_output: When True, the model's own output comes first.

    Returns:
        A `keras.Model` on `model.inputs` whose outputs are a list: the model output
        (if `include_output`) followed by one feature map per name, in order.

    Raises:
        ValueError: for a subclassed model, an unknown layer name (the valid names are
            listed), or a layer whose output is not a 4-D feature map.

    Example:
        >>> import keras
        >>> from keras_l2t.features import feature_extractor
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
        >>> x = keras.layers.Conv2D(2, 3, strides=2, name="conv2")(x)
        >>> model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        >>> taps = feature_extractor(model, ["conv1", "conv2"])
        >>> [tuple(output.shape) for output in taps.outputs]
        [(None, 6, 6, 4), (None, 2, 2, 2)]
    """
    check_functional(model)
    outputs = [model.outputs[0]] if include_output else []
    for name in layer_names:
        outputs.append(feature_map_output(model, name))
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_features")


class LayerNameError(ValueError):
    """A layer name that is not a 4-D feature map of its model; the message lists those.

    Attributes:
        role: The model's role given to `feature_map_output` ("source", "target", "").
    """

    def __init__(self, message: str, role: str = ""):
        super().__init__(message)
        self.role = role


def feature_map_output(model: keras.Model, name: str, role: str = "") -> keras.KerasTensor:
    """Returns the symbolic 4-D output of layer `name`, or raises a clear error.

    Args:
        model: A functional or Sequential Keras model.
        name: The layer's name.
        role: The model's role in error messages: "source" gives "the source model
            'name'"; empty gives "the model 'name'".

    Raises:
        LayerNameError: for an unknown name or an output that is not a 4-D feature map.
    """
    owner = f"{role} model '{model.name}'" if role else f"model '{model.name}'"
    names = [layer.name for layer in model.layers]
    if name not in names:
        nested = [
            layer.name for layer in model.layers
            if isinstance(layer, keras.Model) and name in [s.name for s in layer.layers]
        ]
        hint = (
            f" '{name}' is inside the nested model '{nested[0]}', whose inner layers "
            f"cannot be tapped from '{model.name}': build the network flat (e.g. "
            "keras.applications.ResNet50(include_top=False, input_tensor=inputs), then "
            "your head on its .output)."
            if nested else ""
        )
        raise LayerNameError(
            f"The {owner} has no layer named '{name}'. Layers with 4-D "
            f"feature maps: {feature_map_layers(model)}.{hint}", role
        )
    layer = model.get_layer(name)
    output = _single_output(layer)
    if output is None or len(output.shape) != 4:
        shape = None if output is None else tuple(output.shape)
        raise LayerNameError(
            f"Layer '{name}' of the {owner} outputs shape {shape}, not a 4-D "
            "feature map (batch, height, width, channels). Layers with 4-D feature "
            f"maps: {feature_map_layers(model)}", role
        )
    return output


def _single_output(layer: keras.layers.Layer) -> keras.KerasTensor | None:
    """The layer's output in its model's graph, if it has exactly one."""
    if isinstance(layer, keras.Model):
        # A nested model's `output` is its own inner tensor, not connected to the outer
        # model's inputs; its one call in the outer graph is its inbound node.
        nodes = getattr(layer, "_inbound_nodes", [])
        tensors = nodes[0].output_tensors if len(nodes) == 1 else []
        return tensors[0] if len(tensors) == 1 else None
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    return output if isinstance(output, keras.KerasTensor) else None


def check_functional(model: keras.Model) -> None:
    """Raises a ValueError that says how to fix it unless `model` is a built functional
    or Sequential model, whose layers can be tapped by name."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model, got {type(model).__name__}.")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) is not a built functional "
            "or Sequential model, so its intermediate layers cannot be tapped. Build it "
            "with the functional API (keras.Model(inputs, outputs)), or for a "
            "Sequential model give it an Input first."
        )
