"""Where the device time of traced iterations goes, from a JAX profiler trace.

Usage:
    KERAS_BACKEND=jax python benchmarks/step_time.py --methods=scratch,l2t_ww \\
        --profile_dir=/tmp/profile
    python benchmarks/kernel_summary.py /tmp/profile/l2t_ww --iterations=3

Reads the newest `*.trace.json.gz` under the directory (written by `jax.profiler`; plain
JSON, no TensorBoard needed) and prints, per iteration: the kernels launched, their
summed time, the span from the first kernel's start to the last one's end (busy share =
kernel time / span: a low share means the device waits for launches), the time per
kind of kernel, and the kernels that take the most time. Only events of processes whose
name contains `--process` count (GPU: "/device:"; on a CPU, "/host:CPU" gives a rough
view that also holds runtime events).

Where the trace holds XLA's GPU executions on the host ("...:XLA GPU module"), it also
says how long the host spends in each (launching its kernels and CUDA graphs, with the
time of graph launches and updates) and between them (Keras' Python work per step). The
profiler's Python tracing slows the host side, so take those times as upper bounds.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("iterations", 3, "How many iterations the trace holds.")
flags.DEFINE_string("process", "/device:", "Count events of processes whose name has this.")
flags.DEFINE_integer("top", 15, "How many kernels to list.")

# Kind of kernel by the first keyword its name contains (lower case), in this order.
KINDS = (
    ("convolution", ("conv", "cudnn", "xmma", "implicit_gemm", "wgrad", "dgrad")),
    ("matmul", ("gemm", "cutlass", "dot", "matmul")),
    ("copy", ("memcpy", "memset", "copy", "transpose")),
    ("reduction", ("reduce", "reduction")),
    ("fusion", ("fusion", "loop_", "input_")),
)


def kind_of(name: str) -> str:
    """The kind of a kernel, from keywords in its name; "other" when none matches."""
    lower = name.lower()
    for kind, keywords in KINDS:
        if any(keyword in lower for keyword in keywords):
            return kind
    return "other"


def base_name(name: str) -> str:
    """A kernel name without XLA's numeric suffixes (`fusion.123` -> `fusion`)."""
    return re.sub(r"([._]\d+)+$", "", name)


def read_trace(directory: str) -> list[dict]:
    """The trace events of the newest trace file under `directory`."""
    files = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise SystemExit(f"No *.trace.json.gz under {directory}: pass the directory that "
                         "step_time.py --profile_dir wrote for one method.")
    with gzip.open(max(files, key=os.path.getmtime)) as file:
        trace = json.load(file)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def kernel_events(events: list[dict], process: str) -> list[dict]:
    """Complete ('X') events of the processes whose name contains `process`."""
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    chosen = {pid for pid, name in names.items() if process in name}
    if not chosen:
        raise SystemExit(f"No process named like {process!r} in the trace; it has: "
                         f"{sorted(set(names.values()))}. Pass one with --process.")
    return [e for e in events if e.get("ph") == "X" and e["pid"] in chosen
            and not e["name"].startswith("$")]  # "$..." are Python frames


def totals(kernels: list[dict], key) -> list[tuple[str, list]]:
    """[(key(name), [summed microseconds, count])], the costliest first."""
    groups = collections.defaultdict(lambda: [0.0, 0])
    for e in kernels:
        group = groups[key(e["name"])]
        group[0] += e.get("dur", 0.0)
        group[1] += 1
    return sorted(groups.items(), key=lambda item: -item[1][0])


def summarize(kernels: list[dict], iterations: int, top: int) -> str:
    """The report: totals per iteration, time per kind, the costliest kernels."""
    busy = sum(e.get("dur", 0.0) for e in kernels)
    span = max(e["ts"] + e.get("dur", 0.0) for e in kernels) - min(e["ts"] for e in kernels)
    lines = [
        f"per iteration: {len(kernels) / iterations:.0f} kernels, "
        f"{busy / iterations / 1e3:.2f} ms of kernel time, span {span / iterations / 1e3:.2f} "
        f"ms (busy {busy / span:.0%})",
        "by kind (ms per iteration, share of kernel time, kernels per iteration):",
    ]
    for kind, (time_us, count) in totals(kernels, kind_of):
        lines.append(f"  {kind:12s} {time_us / iterations / 1e3:8.3f} ms  {time_us / busy:6.1%}"
                     f"  {count / iterations:6.0f}")
    lines.append(f"top {top} kernels (ms per iteration, share, calls per iteration, mean us):")
    for name, (time_us, count) in totals(kernels, base_name)[:top]:
        lines.append(f"  {time_us / iterations / 1e3:8.3f} ms  {time_us / busy:6.1%}  "
                     f"{count / iterations:6.0f}  {time_us / count:8.1f}  {name[:90]}")
    return "\n".join(lines)


def host_summary(events: list[dict], iterations: int) -> str:
    """Host time in and between XLA's GPU executions; "" when the trace has none."""
    events = [e for e in events if e.get("ph") == "X"]  # complete events: with a duration
    spans = sorted((e for e in events if e["name"].endswith(":XLA GPU module")),
                   key=lambda e: e["ts"])
    if not spans:
        return ""
    inside = sum(e["dur"] for e in spans) / len(spans)
    gaps = [b["ts"] - a["ts"] - a["dur"] for a, b in zip(spans, spans[1:])]
    lines = [f"host: {inside / 1e3:.2f} ms in each of {len(spans)} XLA executions"
             + (f", {sum(gaps) / len(gaps) / 1e3:.2f} ms between them" if gaps else "")]
    for name, (time_us, count) in totals(events, str):
        if name.startswith("command_buffer::"):
            lines.append(f"  {name}: {count / iterations:.0f} per iteration, "
                         f"{time_us / iterations / 1e3:.2f} ms")
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        raise SystemExit("Usage: python benchmarks/kernel_summary.py PROFILE_DIR [flags]")
    events = read_trace(argv[1])
    kernels = kernel_events(events, FLAGS.process)
    print(f"trace: {argv[1]}, {FLAGS.iterations} iterations, processes like {FLAGS.process!r}")
    print(summarize(kernels, FLAGS.iterations, FLAGS.top))
    host = host_summary(events, FLAGS.iterations)
    if host:
        print(host)


if __name__ == "__main__":
    app.run(main)
