"""Every `>>>` example in keras_l2t runs as a doctest: one case per module that has any,
each in a fresh temporary working directory."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import keras
import pytest

import keras_l2t

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_files(path, prefix):
    """(name, file) of every module below `path`, private ones included, unimported,
    so that a module that fails to import fails its own case, not the collection."""
    for info in pkgutil.iter_modules(path, prefix):
        origin = Path(info.module_finder.find_spec(info.name).origin)
        yield info.name, origin
        if info.ispkg:
            yield from _module_files([str(origin.parent)], info.name + ".")


MODULES = sorted(
    name
    for name, origin in [("keras_l2t", Path(keras_l2t.__file__)),
                         *_module_files(keras_l2t.__path__, "keras_l2t.")]
    if ">>>" in origin.read_text()
)


def test_examples_are_found():
    assert "keras_l2t.sources" in MODULES and "keras_l2t.data.splits" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    tests = [test for test in doctest.DocTestFinder().find(module, name) if test.examples]
    assert tests, f"{name} has '>>>' outside its docstrings' examples"
    skipped = [
        f"{test.name}, line {example.lineno + 1}: {example.source.strip()}"
        for test in tests
        for example in test.examples
        if example.options.get(doctest.SKIP)
    ]
    assert not skipped, "examples must run, not be skipped:\n" + "\n".join(skipped)
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    try:
        for test in tests:
            runner.run(test, out=report.append)
    finally:
        keras.config.set_dtype_policy("float32")
        keras.backend.clear_session()
    if runner.failures:
        pytest.fail("".join(report), pytrace=False)
