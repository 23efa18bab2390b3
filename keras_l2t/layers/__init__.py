"""The small per-pair modules of L2T-ww: the adapter and the two meta-networks."""

from keras_l2t.layers.channel_weights import ChannelWeights
from keras_l2t.layers.feature_adapter import FeatureAdapter
from keras_l2t.layers.pair_weight import PAIR_WEIGHT_ACTIVATIONS, PairWeight

__all__ = ["PAIR_WEIGHT_ACTIVATIONS", "ChannelWeights", "FeatureAdapter", "PairWeight"]
