"""Loading a network from a file: a user's own `.keras` model, or weights for a builder."""

from __future__ import annotations

import os
import zipfile

import keras

from keras_l2t.features import feature_map_layers
from keras_l2t.networks.common import finish_target


def load_network(path: str | os.PathLike, exact_batch_norm: bool = True) -> keras.Model:
    """Loads a functional Keras model from a `.keras` file, ready to be tapped.

    Any functional or Sequential model works, not only the builders' ones; its
    4-D layers can then be tapped by name with `feature_extractor`.

    Args:
        path: A `.keras` file (the Keras 3 format). For a `.weights.h5` file, build the
            architecture with `build_network(name, ..., weights=path)` instead.
        exact_batch_norm: Switch BatchNorm to exact second-order moments (see
            `keras_l2t.exact_batch_norm`). Keep True for a target network.

    Returns:
        The model, loaded without its optimizer (`compile=False`).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for another file type, a file that is not a Keras archive, or a
            subclassed model (no layer graph to tap: rebuild it with the functional API).

    Example:
        >>> import os, tempfile
        >>> from keras_l2t.networks import load_network, small_cnn
        >>> path = os.path.join(tempfile.mkdtemp(), "target.keras")
        >>> small_cnn("cnn_4", num_classes=3, input_shape=(8, 8, 3)).save(path)
        >>> load_network(path).name
        'cnn_4'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such model file: '{path}'.")
    if not path.endswith(".keras"):
        raise ValueError(
            f"'{path}' is not a .keras file. Load a full model from a .keras file; "
            "load a .weights.h5 file into its architecture with "
            "build_network(name, num_classes, weights=path)."
        )
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a bad file
        raise ValueError(
            f"'{path}' is not a Keras model file (a .keras file is a zip archive); write "
            "one with model.save('name.keras')."
        )
    model = keras.saving.load_model(path, compile=False)
    feature_map_layers(model)  # Raises a clear ValueError for a subclassed model.
    return finish_target(model, exact_batch_norm)


def load_weights_file(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Loads a `.weights.h5` file (or the weights of a `.keras` file) into `model`.

    Args:
        model: A built model of the same architecture as the one that saved the file.
        path: A `.weights.h5` file from `model.save_weights`, or a `.keras` file.

    Returns:
        `model`, with the loaded weights.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is unreadable or does not fit the architecture (Keras'
            message, with the file and the model named).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such weights file: '{path}'.")
    try:
        model.load_weights(path)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Weights file '{path}' cannot be loaded into model '{model.name}' (is it a "
            f".weights.h5 or .keras file of this architecture and num_classes?): {error}"
        ) from error
    return model
