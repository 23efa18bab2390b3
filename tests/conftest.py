"""Test set-up: two CPU devices (MirroredStrategy on TensorFlow, DataParallel on JAX)
before the backend starts, a JAX compilation cache shared with the processes tests
start, and the float64 fixture."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    # One compilation cache for this session, shared with the train.py processes the
    # tests start (the same program compiles once, not once per process); new each run.
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        _cache = tempfile.mkdtemp(prefix="jax_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
        atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import tensorflow as tf  # noqa: E402

# Must run before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def float64(monkeypatch):
    """Networks and optimizers in float64, end to end.

    On JAX this also enables 64-bit types and lifts Keras' rule that demotes float64
    results to float32 off TensorFlow (`BIT64_TO_BIT32_DTYPE`, used by `ops.mean`,
    BatchNormalization, ...), which would make finite differences meaningless.
    """
    keras.config.set_dtype_policy("float64")
    if keras.backend.backend() == "jax":
        import jax
        from keras.src.backend.common import dtypes

        monkeypatch.setitem(dtypes.BIT64_TO_BIT32_DTYPE, "float64", "float64")
        with jax.enable_x64(True):
            yield
    else:
        yield
    keras.config.set_dtype_policy("float32")
