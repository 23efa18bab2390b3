"""Fixtures of the experiment tests (the top-level conftest sets 2 logical CPUs)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from experiment_helpers import make_fashion_dir, make_source_file, run_train, tiny_flags  # noqa: E402


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> str:
    return make_fashion_dir(str(tmp_path_factory.mktemp("fashion")))


@pytest.fixture(scope="session")
def source_file(tmp_path_factory) -> str:
    return make_source_file(str(tmp_path_factory.mktemp("source") / "source.keras"))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, fashion_dir, source_file):
    """An uninterrupted 3-epoch L2T-ww run of train.py: (work_dir, flags, process)."""
    work_dir = str(tmp_path_factory.mktemp("runs") / "full")
    flags = tiny_flags(work_dir, fashion_dir, source_file, deterministic=True)
    process = run_train(flags)
    assert process.returncode == 0, process.stderr[-3000:]
    return work_dir, flags, process
