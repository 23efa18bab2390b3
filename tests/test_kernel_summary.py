"""benchmarks/kernel_summary.py against a hand-made trace."""

import importlib.util
import pathlib

_PATH = pathlib.Path(__file__).parents[1] / "benchmarks" / "kernel_summary.py"
_SPEC = importlib.util.spec_from_file_location("kernel_summary", _PATH)
kernel_summary = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(kernel_summary)


def _event(name, ts_ms, dur_ms, pid=1):
    return {"ph": "X", "name": name, "ts": ts_ms * 1e3, "dur": dur_ms * 1e3, "pid": pid}


TRACE = [
    {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
    {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
    # Two iterations on the device: 30 ms of kernels over a 110 ms span.
    _event("sm90_xmma_fprop_implicit_gemm", 100, 10),
    _event("loop_add_fusion.12", 120, 5),
    _event("sm90_xmma_fprop_implicit_gemm", 200, 10),
    _event("loop_add_fusion.13", 155, 5),
    # The host: two executions of 40 ms, 60 ms apart; four graph launches, two updates.
    _event("jit_train_step:XLA GPU module", 90, 40, pid=2),
    _event("jit_train_step:XLA GPU module", 190, 40, pid=2),
    *[_event("command_buffer::execute", ts, 3, pid=2) for ts in (95, 100, 195, 205)],
    *[_event("command_buffer::update", ts, 7, pid=2) for ts in (96, 196)],
    _event("$step_time.py:140 on_train_batch_end", 150, 30, pid=2),  # a Python frame
]


def test_device_summary_counts_only_the_device_process():
    kernels = kernel_summary.kernel_events(TRACE, "/device:")
    assert len(kernels) == 4
    assert len(kernel_summary.kernel_events(TRACE, "/host:CPU")) == 8  # no Python frames
    report = kernel_summary.summarize(kernels, iterations=2, top=5)
    assert "2 kernels, 15.00 ms of kernel time, span 55.00 ms (busy 27%)" in report
    assert "convolution    10.000 ms   66.7%       1" in report
    assert "loop_add_fusion" in report and "loop_add_fusion.12" not in report


def test_host_summary_times_executions_and_graph_work():
    host = kernel_summary.host_summary(TRACE, iterations=2)
    assert host.splitlines() == [
        "host: 40.00 ms in each of 2 XLA executions, 60.00 ms between them",
        "  command_buffer::update: 1 per iteration, 7.00 ms",
        "  command_buffer::execute: 2 per iteration, 6.00 ms",
    ]


def test_host_summary_is_empty_without_xla_executions():
    assert kernel_summary.host_summary(TRACE[:6], iterations=2) == ""
