"""Per-epoch records: the CSV log and TensorBoard scalars (written by the chief only)."""

from __future__ import annotations

import csv
import os

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# Marks a summary as a TensorBoard scalar without importing tensorboard (not a
# dependency): what `tensorboard.summary.scalar` writes.
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)
# Likewise for an image: a string tensor [width, height, png bytes], as
# `tensorboard.summary.image` writes it.
_IMAGE = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
)


class EpochLog:
    """Appends one row per epoch to a CSV file and one scalar per metric to TensorBoard.

    Args:
        csv_path: The CSV file.
        tensorboard_dir: The TensorBoard log directory.

    Example:
        >>> log = EpochLog("run/log.csv", "run/tensorboard")
        >>> log.truncate(finished_epochs=3)  # on resume: drop rows of unfinished epochs
        >>> log.write(3, {"loss": 1.2, "val_accuracy": 0.5})
    """

    def __init__(self, csv_path: str, tensorboard_dir: str):
        self.csv_path = csv_path
        self.writer = tf.summary.create_file_writer(tensorboard_dir)

    def truncate(self, finished_epochs: int) -> None:
        """Keeps only the rows of the first `finished_epochs` epochs (after a resume)."""
        if not os.path.exists(self.csv_path):
            return
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [row for row in rows if int(row["epoch"]) < finished_epochs]
        if len(kept) != len(rows):
            self._rewrite(kept, list(rows[0].keys()) if rows else ["epoch"])

    def write(self, epoch: int, logs: dict[str, float]) -> None:
        """Records epoch `epoch` (0-based)."""
        row = {"epoch": epoch, **{k: f"{v:.6g}" for k, v in logs.items()}}
        exists = os.path.exists(self.csv_path) and os.path.getsize(self.csv_path) > 0
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if not exists:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
        with self.writer.as_default(step=epoch):
            for key, value in logs.items():
                tf.summary.write(key, tf.constant(value, tf.float32), metadata=_SCALAR)
        self.writer.flush()

    def write_image(self, epoch: int, name: str, png: bytes) -> None:
        """Records a PNG image under `name` at epoch `epoch` (0-based) in TensorBoard."""
        shape = tf.shape(tf.io.decode_png(png))
        value = tf.stack([tf.as_string(shape[1]), tf.as_string(shape[0]), tf.constant(png)])
        with self.writer.as_default(step=epoch):
            tf.summary.write(name, value, metadata=_IMAGE)
        self.writer.flush()

    def read(self) -> dict[str, list[float]]:
        """The CSV log as columns: metric name -> one value per recorded epoch."""
        if not os.path.exists(self.csv_path):
            return {}
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}

    def _rewrite(self, rows: list[dict], fieldnames: list[str]) -> None:
        temporary = self.csv_path + ".tmp"
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, self.csv_path)
