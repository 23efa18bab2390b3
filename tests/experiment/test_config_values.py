"""ExperimentConfig on its own: JSON round trip, resume comparison, ranges, pairs, seeds."""

from __future__ import annotations

import json

import pytest

from keras_l2t.experiment import ExperimentConfig, ExperimentError
from keras_l2t.experiment.config import parse_range
from keras_l2t.experiment.data import epoch_seed


def _config(**overrides) -> ExperimentConfig:
    values = dict(dataset="fashion_mnist", target="cnn_4_8", source="cnn_8_8",
                  work_dir="/tmp/x")
    values.update(overrides)
    return ExperimentConfig(**values)


def test_json_round_trip_and_unknown_keys():
    config = _config(source_layers=["stage1_out"], epochs=7)
    again = ExperimentConfig.from_dict(json.loads(config.to_json()))
    assert again == config
    with pytest.raises(ExperimentError, match="Unknown config keys"):
        ExperimentConfig.from_dict({**config.to_dict(), "epoch": 3})


def test_differences_ignore_only_runtime_fields():
    config = _config()
    assert config.differences(_config(work_dir="/elsewhere", strategy="mirrored",
                                      progress="bar", data_dir="/data")) == []
    assert config.differences(_config(epochs=3, seed=1)) == ["epochs", "seed"]


def test_ranges_and_pairs():
    assert parse_range("train_indices", " 5 : 9 ") == range(5, 9)
    with pytest.raises(ExperimentError, match="START:STOP"):
        parse_range("train_indices", "9:5")
    assert _config().pair_list() is None
    assert _config(pairs="one_to_one").pair_list() == "one_to_one"
    assert _config(pairs="a:b, c:d").pair_list() == [("a", "b"), ("c", "d")]
    with pytest.raises(ExperimentError, match="one_to_one needs as many"):
        _config(pairs="one_to_one", source_layers=["a"], target_layers=["b", "c"]).validate()


def test_epoch_seeds_differ_per_epoch_and_seed_and_repeat():
    seeds = {epoch_seed(seed, epoch) for seed in range(5) for epoch in range(200)}
    assert len(seeds) == 1000
    assert epoch_seed(3, 17) == epoch_seed(3, 17)
