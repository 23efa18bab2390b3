"""Floating-point operations of one training iteration per method, counted by XLA.

Usage (JAX backend; the networks and pairs of `step_time.py`, same flags):
    KERAS_BACKEND=jax python benchmarks/flop_count.py --methods=scratch,fm,l2t_ww
    KERAS_BACKEND=jax python benchmarks/flop_count.py --source=resnet34 \
        --target=resnet18 --image_size=224 --batch_size=8 --num_classes=200

Compiles each method's whole training step (`TransferModel.train_step` on JAX, as
`fit` runs it) and prints XLA's cost analysis of the optimised program: the flops
(a multiply-add counts 2) and the ratio to the plain `scratch` step, and the instructions
of the optimised program (`op_counts`: kernels, dots, convolutions). Dead code is
eliminated before counting, so only what the iteration needs is counted. On a machine
whose step time is bound by arithmetic, the time ratios of `step_time.py` should follow
these ratios; a method whose time ratio is far above its flop ratio loses time elsewhere.
"""

from __future__ import annotations

import json
import re
import sys

from absl import app, flags
from step_time import build_model, child_results, random_batch  # + shared flags

FLAGS = flags.FLAGS


def count(method: str) -> dict:
    """XLA's flop count of one compiled training step of `method`."""
    import jax

    model = build_model(method)
    images, labels = random_batch()
    model.fit(images[:2], labels[:2], batch_size=2, epochs=1, verbose=0)  # builds, cheaply
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True)
    compiled = jax.jit(model.train_step).lower(state, (images, labels)).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return {"method": method, "pairs": len(model.pairs), "flops": analysis["flops"],
            **op_counts(compiled.as_text())}


# Entry-computation instructions that launch no work of their own.
NOT_KERNELS = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}


def op_counts(hlo_text: str) -> dict:
    """Kernel-like instructions of the optimised program's entry computation.

    Returns:
        {"kernels": every instruction but parameters, constants, tuples and bitcasts
        (each fusion, dot, convolution, copy... is one launch on a GPU), "dots" and
        "convolutions": the matrix products among them, wherever they sit (inside
        fusions too)}.
    """
    entry = hlo_text[hlo_text.index("\nENTRY "):]
    entry = entry[: entry.index("\n}")]
    ops = re.findall(r"^\s*\S+ = .*?\s([a-z][\w-]*)\(", entry, flags=re.MULTILINE)
    return {
        "kernels": sum(op not in NOT_KERNELS for op in ops),
        "dots": len(re.findall(r"\sdot\(", hlo_text)),
        "convolutions": len(re.findall(r"\sconvolution\(", hlo_text)),
    }


def main(argv):
    del argv
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("flop_count.py needs KERAS_BACKEND=jax (XLA's cost analysis).")
    if FLAGS.child:
        print(json.dumps(count(FLAGS.child)))
        return
    print(f"command: python {' '.join(sys.argv)}")
    print(f"settings: {FLAGS.source} -> {FLAGS.target}, {FLAGS.image_size} px, batch "
          f"{FLAGS.batch_size}, {FLAGS.num_classes} classes")
    scratch = None
    for method, result in child_results(FLAGS.methods):
        scratch = result["flops"] if method == "scratch" else scratch
        ratio = f"x{result['flops'] / scratch:.2f}" if scratch else "-"
        print(f"{method:8s} {result['pairs']:3d} pairs  {result['flops'] / 1e9:9.1f} GFLOP  "
              f"{ratio:>6s} scratch  {result['kernels']:5d} kernels  {result['dots']:4d} dots  "
              f"{result['convolutions']:4d} convolutions", flush=True)


if __name__ == "__main__":
    app.run(main)
