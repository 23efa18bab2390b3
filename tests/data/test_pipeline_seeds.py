"""Training batches are a function of the pipeline's seed alone: not of TensorFlow's
global seed, and the same on every iteration of one dataset."""

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import collect, decode_ids

from keras_l2t.data import augment, load_dataset, pipeline, zip_meta
from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.data import load_data

N = 40


def _array_dataset() -> tf.data.Dataset:
    """N random 12x12 RGB images (augmentation shows in every pixel), labels 0..N-1."""
    images = np.random.default_rng(0).integers(0, 256, (N, 12, 12, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, np.arange(N, dtype=np.int64)))


def _pipeline(seed: int, augmentation: str = augment.PAD_CROP, **kwargs) -> tf.data.Dataset:
    return pipeline.build_pipeline(
        _array_dataset(), kind=pipeline.ARRAY, training=True, image_size=12,
        augmentation=augmentation, batch_size=8, seed=seed, **kwargs)


def _assert_equal(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _assert_differ(a, b) -> None:
    assert not np.array_equal(a[0], b[0]) and not np.array_equal(a[1], b[1])


@pytest.mark.parametrize("augmentation", augment.AUGMENTATIONS)
def test_train_batches_do_not_depend_on_the_global_seed(augmentation):
    tf.random.set_seed(1)
    first = collect(_pipeline(5, augmentation))
    tf.random.set_seed(2)
    tf.random.uniform([3])  # other random ops before the pipeline change nothing either
    second = collect(_pipeline(5, augmentation))
    _assert_equal(first, second)
    assert sorted(first[1]) == list(range(N))  # each example once
    _assert_differ(first, collect(_pipeline(6, augmentation)))


def test_a_train_pipeline_gives_the_same_batches_on_every_iteration():
    batches = _pipeline(5)
    first = collect(batches)
    tf.random.set_seed(3)
    _assert_equal(first, collect(batches))
    _assert_equal(first, collect(batches))


def test_an_endless_pipeline_reshuffles_every_pass_and_replays_when_iterated_again():
    tf.random.set_seed(1)
    stream = _pipeline(5, repeat=True)
    x, y = collect(stream.take(20))  # 160 images: 4 passes over the 40
    passes = y.reshape(4, N)
    assert all(sorted(p) == list(range(N)) for p in passes)
    assert len({tuple(p) for p in passes}) == 4
    # The same image in two passes is augmented anew.
    first, second = (x[k * N:(k + 1) * N][np.argsort(passes[k])] for k in (0, 1))
    assert not np.array_equal(first, second)
    tf.random.set_seed(2)
    _assert_equal((x, y), collect(_pipeline(5, repeat=True).take(20)))
    _assert_equal((x, y), collect(stream.take(20)))


def test_stateless_shuffle_permutes_blocks_by_the_seed():
    ds = tf.data.Dataset.range(10)
    order = [int(v) for v in pipeline.stateless_shuffle(ds, 4, seed=7)]
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [4, 5, 6, 7]
    assert sorted(order[8:]) == [8, 9]
    assert order == [int(v) for v in pipeline.stateless_shuffle(ds, 4, seed=7)]
    whole = [[int(v) for v in pipeline.stateless_shuffle(ds, 10, seed=s)] for s in range(3)]
    assert len({tuple(o) for o in whole}) == 3
    assert pipeline.stateless_shuffle(ds, 4, seed=7).cardinality() == 10


def test_load_dataset_train_and_meta_do_not_depend_on_the_global_seed(image_folder):
    root, _ = image_folder()

    def load(shuffle_seed):
        data = load_dataset("image_folder", data_dir=root, image_size=32, batch_size=8,
                            split_seed=1, shuffle_seed=shuffle_seed, meta_fraction=0.2)
        return data.train, data.meta.take(6)

    tf.random.set_seed(1)
    train, meta = load(4)
    train_batches, meta_batches = collect(train), collect(meta)
    tf.random.set_seed(2)
    other_train, other_meta = load(4)
    for first, second in ((train_batches, collect(other_train)),
                          (meta_batches, collect(other_meta)),
                          (train_batches, collect(train)),  # iterated again
                          (meta_batches, collect(meta))):
        _assert_equal(first, second)
    new_train, new_meta = load(5)
    for first, second in ((train_batches, collect(new_train)),
                          (meta_batches, collect(new_meta))):
        assert not np.array_equal(decode_ids(first[0]), decode_ids(second[0]))


def test_load_dataset_repeat_gives_new_passes_for_fit_over_several_epochs(image_folder):
    root, _ = image_folder()

    def passes(global_seed):
        tf.random.set_seed(global_seed)
        data = load_dataset("image_folder", data_dir=root, image_size=32, batch_size=8,
                            split_seed=1, shuffle_seed=4, repeat=True)
        assert data.train.cardinality() == tf.data.INFINITE_CARDINALITY
        steps = data.steps_per_epoch
        assert steps == -(-data.num_train // 8)
        once = load_dataset("image_folder", data_dir=root, image_size=32, batch_size=8,
                            split_seed=1, shuffle_seed=4)
        assert once.steps_per_epoch == steps == len(list(once.train))
        return collect(data.train.take(2 * steps)), data.num_train

    (x, y), num_train = passes(1)
    _assert_equal((x, y), passes(2)[0])  # the seed alone decides
    ids = decode_ids(x)
    first, second = ids[:num_train], ids[num_train:2 * num_train]
    assert sorted(first) == sorted(second) == sorted(set(first))  # each image once a pass
    assert not np.array_equal(first, second)  # in another order


def test_an_experiment_epochs_batches_are_a_function_of_seed_and_epoch(image_folder, tmp_path):
    root, _ = image_folder()
    config = ExperimentConfig(dataset="image_folder", data_dir=root, image_size=32,
                              batch_size=8, seed=3, meta_objective="held_out",
                              work_dir=str(tmp_path / "run"))

    def epoch(data, e):
        return [np.concatenate([a.reshape(-1) for a in (x, y, x_meta, y_meta)])
                for (x, y), (x_meta, y_meta) in data.train(e).as_numpy_iterator()]

    tf.random.set_seed(1)
    data = load_data(config)
    first = epoch(data, 1)
    tf.random.set_seed(2)
    _assert_equal(first, epoch(load_data(config), 1))
    _assert_equal(first, epoch(data, 1))
    assert not np.array_equal(first[0], epoch(data, 0)[0])
    other = load_data(ExperimentConfig(**{**config.to_dict(), "seed": 4}))
    assert not np.array_equal(first[0], epoch(other, 1)[0])


def test_zip_meta_keeps_the_pairs_on_every_iteration():
    train, meta = _pipeline(5), _pipeline(9, repeat=True)
    pairs = zip_meta(train, meta)
    first = [np.concatenate([a.numpy().reshape(-1) for a in tf.nest.flatten(e)])
             for e in pairs]
    tf.random.set_seed(8)
    again = [np.concatenate([a.numpy().reshape(-1) for a in tf.nest.flatten(e)])
             for e in pairs]
    _assert_equal(first, again)
