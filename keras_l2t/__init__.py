"""keras-l2t: Learning What and Where to Transfer (Jang et al., ICML 2019) for Keras 3.

The package exports what the README's "Use it from Python" lists; the networks, sources,
data and source pretraining are in their modules (see docs/). Modules and names with a
leading underscore are internal.
"""

from keras_l2t.optimizers import CoupledSGD, TorchAdam
from keras_l2t.transfer_model import TransferModel

__version__ = "0.1.0"

__all__ = ["CoupledSGD", "TorchAdam", "TransferModel"]
