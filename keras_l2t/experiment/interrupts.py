"""Ctrl-C that stops a run within one step, every time, between checkpoints.

Python raises `KeyboardInterrupt` wherever the main thread happens to be when SIGINT
arrives. Inside a finalizer (TensorFlow's `ConcreteFunctionGarbageCollector.__del__`,
for one) the exception is printed as "Exception ignored in ..." and dropped, and the run
trains on. Under `deferred_interrupts()` (train.py runs in it) a Ctrl-C is remembered:

- while an epoch trains (`training_epochs`), the model stops after its current step
  (`stop_training`, with `StopOnInterrupt` among the callbacks) and `Interrupted` is
  raised at the end of the step, before that partial epoch is validated or saved;
- elsewhere it raises at once, as Python's default does;
- either way `check()` raises `Interrupted` at the run's next safe point (every step,
  every evaluation batch, every epoch), so an exception lost in a finalizer still stops
  the run. A second Ctrl-C raises at once.

Outside `deferred_interrupts()` Ctrl-C behaves as Python's default.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import keras


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run at a safe point; the finished epochs are kept."""


class _State:
    installed = False
    requested = False
    model = None  # the model whose epoch is training, stopped after its step


def _on_sigint(signum, frame) -> None:
    if _State.requested or _State.model is None:
        _State.requested = True
        raise KeyboardInterrupt
    _State.requested = True
    _State.model.stop_training = True
    sys.stderr.write("\nCtrl-C: stopping after this step (Ctrl-C again to stop at once).\n")


@contextlib.contextmanager
def deferred_interrupts():
    """Within this block Ctrl-C stops the run at its next safe point (module docstring).

    A no-op outside the main thread, where signal handlers cannot be set.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _State.installed, _State.requested = True, False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _State.installed, _State.requested, _State.model = False, False, None


@contextlib.contextmanager
def training_epochs(model):
    """Within this block a Ctrl-C stops `model`'s `fit` after the current step."""
    _State.model = model
    try:
        yield
    finally:
        _State.model = None


def check() -> None:
    """Raises `Interrupted` if Ctrl-C was pressed under `deferred_interrupts()`."""
    if _State.installed and _State.requested:
        raise Interrupted


class StopOnInterrupt(keras.callbacks.Callback):
    """Stops `fit` after the step during which Ctrl-C came, and raises `Interrupted` at
    the epoch's end before the callbacks after it validate or checkpoint the partial
    epoch. Put it first among the callbacks.
    """

    def on_train_batch_begin(self, batch, logs=None):
        # `fit` resets `stop_training` when it starts: a Ctrl-C just before is kept here.
        if _State.installed and _State.requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        check()
