"""ExperimentConfig on its own: JSON round trip, resume comparison, ranges, pairs, seeds."""

from __future__ import annotations

import json

import keras
import pytest
from toy_networks import conv_net

from keras_l2t.experiment import ExperimentConfig, ExperimentError
from keras_l2t.experiment.config import parse_range
from keras_l2t.experiment.data import epoch_seed
from keras_l2t.experiment.run import build_transfer_model


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


def test_beta_schedule_cosine_decays_both_betas_over_the_run():
    layers = dict(source_layers=["s_block0", "s_block1"], target_layers=["t_block0"])
    source, target = conv_net("s", [3, 4], 5), conv_net("t", [2], 3)
    constant = build_transfer_model(_config(beta=0.5, **layers), source, target, 40)
    assert constant.beta == 0.5 and constant.attention_beta == 1000.0
    model = build_transfer_model(
        _config(beta=0.5, beta_schedule="cosine", **layers), source, target, 40)
    for schedule, start in ((model.beta, 0.5), (model.attention_beta, 1000.0)):
        assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
        values = [float(schedule(step)) for step in (0, 20, 40)]
        assert values == pytest.approx([start, start / 2, 0.0], abs=1e-5 * start)


def test_source_normalization_reaches_the_model():
    layers = dict(source_layers=["s_block1"], target_layers=["t_block0"], pairs="single")
    source, target = conv_net("s", [3, 4], 5), conv_net("t", [2], 3)
    for value in ("none", "rms"):
        config = _config(source_normalization=value, **layers)
        config.validate()
        assert build_transfer_model(config, source, target, 40).source_normalization == value


@pytest.mark.parametrize("flag, values", [("transfer_gate", ("none", "aligned")),
                                          ("pair_weight_normalization", ("none", "mean"))])
def test_transfer_gate_and_pair_weight_normalization_reach_the_model(flag, values):
    layers = dict(source_layers=["s_block1"], target_layers=["t_block0"], pairs="single")
    source, target = conv_net("s", [3, 4], 5), conv_net("t", [2], 3)
    for value in values:
        config = _config(**{flag: value}, **layers)
        config.validate()
        assert getattr(build_transfer_model(config, source, target, 40), flag) == value


def test_the_gate_momentum_reaches_the_model():
    layers = dict(source_layers=["s_block1"], target_layers=["t_block0"], pairs="single")
    source, target = conv_net("s", [3, 4], 5), conv_net("t", [2], 3)
    config = _config(transfer_gate="aligned", transfer_gate_momentum=0.9, **layers)
    config.validate()
    model = build_transfer_model(config, source, target, 40)
    assert model.transfer_gate_momentum == 0.9
    assert model._transfer_alignment is not None
