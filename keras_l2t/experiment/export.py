"""Exports the trained target as a SavedModel that serves raw uint8 images of any size.

The `serve` signature (also `serving_default`, what TF-Serving calls by default) takes
`images`, uint8 [batch, height, width, 3], applies the evaluation transform of training
(`keras_l2t.data.augment`: resize / centre crop to the training size, ImageNet
mean/std) and returns the logits, the softmax probabilities and the predicted classes
(for a target that ends in a softmax, its output are the probabilities and their log
the logits). The SavedModel needs neither
keras-l2t nor Keras to load: `tf.saved_model.load(path).serve(images)`.

The preprocessing is TensorFlow's on every backend; the network is Keras' own export of
it (a `tf.function` on TensorFlow, converted with jax2tf on JAX), also served alone as
`logits` (float32 [batch, size, size, 3] already preprocessed -> the network's output).
Both signatures take an empty batch (a (0, num_classes) output); the bare `network`
signature, which they call, needs at least one image.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_l2t._network_checks import outputs_logits
from keras_l2t.data import augment


def export_target(target: keras.Model, path: str, image_size: int) -> None:
    """Writes `target` with its preprocessing to `path` (a SavedModel directory).

    Args:
        target: The trained target network (float32 normalised images -> logits).
        path: Output directory.
        image_size: The side the target was trained at (it also picks the evaluation
            transform, as the data pipeline does).

    Serve it with `tf.saved_model.load(path).serve(uint8_images)["classes"]`.
    """
    from_logits = outputs_logits(target)
    transform = augment.eval_transform(augment.default_augmentation(image_size), image_size)
    archive = keras.export.ExportArchive()
    pixels_spec = keras.InputSpec(shape=(None, image_size, image_size, 3), dtype="float32")
    network = archive.track_and_add_endpoint("network", target, input_signature=[pixels_spec])
    num_classes = int(target.output.shape[-1])
    output_dtype = tf.as_dtype(keras.backend.standardize_dtype(target.output.dtype))

    @tf.function(input_signature=[
        tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="args_0")])
    def logits(pixels):
        # An empty batch skips the network: TensorFlow's CPU convolution and batch norm
        # fail on one, and JAX's export asks for at least one image.
        return tf.cond(
            tf.shape(pixels)[0] > 0,
            lambda: network(pixels),
            lambda: tf.zeros([0, num_classes], output_dtype),
        )

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(images):
        pixels = tf.map_fn(
            transform, images,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )
        outputs = tf.cast(logits(pixels), tf.float32)
        if from_logits:
            logits_out, probabilities = outputs, tf.nn.softmax(outputs, axis=-1)
        else:
            logits_out, probabilities = tf.math.log(tf.maximum(outputs, 1e-12)), outputs
        return {
            "logits": logits_out,
            "probabilities": probabilities,
            "classes": tf.argmax(outputs, axis=-1, output_type=tf.int32),
        }

    archive.add_endpoint("logits", logits)
    archive.add_endpoint("serve", serve)
    archive.add_endpoint("serving_default", serve)  # else Keras gives it to `network`
    archive.write_out(path, verbose=False)
