"""keras-l2t: Learning What and Where to Transfer (Jang et al., ICML 2019) for Keras 3."""

from keras_l2t.exact_batch_norm import is_batch_norm_exact, make_batch_norm_exact
from keras_l2t.features import feature_extractor, feature_map_layers
from keras_l2t.layers import ChannelWeights, FeatureAdapter, PairWeight
from keras_l2t.methods import METHODS, get_method
from keras_l2t.optimizers import CoupledSGD, TorchAdam
from keras_l2t.pairs import resolve_pairs
from keras_l2t.transfer_model import TransferModel

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "ChannelWeights",
    "CoupledSGD",
    "FeatureAdapter",
    "PairWeight",
    "TorchAdam",
    "TransferModel",
    "feature_extractor",
    "feature_map_layers",
    "get_method",
    "is_batch_norm_exact",
    "make_batch_norm_exact",
    "resolve_pairs",
]
