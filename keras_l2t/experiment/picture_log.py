"""Pictures of the learned pair and channel weights, per epoch and at the end of a run."""

from __future__ import annotations

import os

from keras_l2t import pictures
from keras_l2t.experiment.epoch_log import EpochLog


class PictureLog:
    """Draws what an L2T-w / L2T-ww run learned (chief only; needs matplotlib).

    Every epoch: the pair-weight heatmap and the channel weights as TensorBoard images.
    At the end: `pictures/pair_weights.png`, `pair_weights_over_epochs.png` and
    `channel_weights.png` in the work directory, and the same in TensorBoard. Methods
    without meta-networks draw nothing.

    Args:
        model: The `TransferModel`.
        images: A fixed batch of preprocessed images to compute the weights on.
        log: The run's `EpochLog` (TensorBoard writer and CSV history).
        directory: Where the final PNG files go.
    """

    def __init__(self, model, images, log: EpochLog, directory: str):
        self.model, self.images, self.log, self.directory = model, images, log, directory
        self.enabled = model.method.meta_learned
        if self.enabled:
            try:
                pictures._pyplot()
            except ImportError as error:
                print(f"Pictures of the learned weights skipped: {error}", flush=True)
                self.enabled = False

    def epoch(self, epoch: int) -> None:
        """Adds this epoch's pictures to TensorBoard."""
        if not self.enabled:
            return
        lambdas, channels = pictures.current_weights(self.model, self.images)
        if lambdas:
            figure = pictures.plot_pair_weights(
                self.model.pairs, lambdas, title=f"Pair weights λ, epoch {epoch + 1}"
            )
            self.log.write_image(epoch, "pair_weights", pictures.to_png(figure))
        if channels:
            figure = pictures.plot_channel_weights(self.model.pairs, channels)
            self.log.write_image(epoch, "channel_weights", pictures.to_png(figure))

    def finish(self, epoch: int) -> list[str]:
        """Writes the final PNG files (and TensorBoard images at `epoch`); returns paths."""
        if not self.enabled:
            return []
        paths = pictures.write_pictures(self.model, self.images, self.log.read(),
                                        self.directory)
        for path in paths:
            with open(path, "rb") as f:
                name = os.path.splitext(os.path.basename(path))[0]
                self.log.write_image(epoch, f"final/{name}", f.read())
        return paths
