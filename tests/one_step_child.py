"""Run by test_backends_agree.py in a fresh process on one backend (KERAS_BACKEND).

    python one_step_child.py WEIGHTS.npz OUT.npz

Builds the toy model, loads WEIGHTS.npz (variable path -> value) when it exists (else
writes the model's initial weights there), takes two iterations on a fixed batch and
saves every variable of the model and both optimizers to OUT.npz by path.
"""

import os
import sys

import keras
import numpy as np
from toy_networks import toy_batch, toy_transfer_model

import keras_l2t


def main(weights_path: str, out_path: str) -> None:
    model = toy_transfer_model(seed=11)
    model.compile(
        optimizer=keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=1e-3),
        meta_optimizer=keras.optimizers.Adam(1e-2),
    )
    if os.path.exists(weights_path):
        weights = np.load(weights_path)
        for variable in model.weights:
            variable.assign(weights[variable.path])
    else:
        np.savez(weights_path, **{v.path: v.numpy() for v in model.weights})
    x, y = toy_batch(n=8, seed=12)
    for _ in range(2):  # the second lookahead starts from non-zero momentums
        model.train_on_batch(x, y)
    state = {f"model/{v.path}": v.numpy() for v in model.weights}
    state.update({f"optimizer/{v.path}": v.numpy() for v in model.optimizer.variables})
    state.update({f"meta/{v.path}": v.numpy() for v in model.meta_optimizer.variables})
    np.savez(out_path, **state)


if __name__ == "__main__":
    main(*sys.argv[1:])
