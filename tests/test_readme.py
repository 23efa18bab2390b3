"""The README's Python example runs as written; its commands and versions match CI's and
pyproject.toml's."""

import os
import re
from pathlib import Path

from backends import tensorflow_only

README = Path(__file__).resolve().parents[1] / "README.md"


@tensorflow_only("the example has no backend code; fit and export on JAX: test_train_step, "
                 "test_saving, test_other_backend")
def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README should have exactly one Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["logits"].shape == (4, 10)
    assert os.path.exists(tmp_path / "target_saved_model" / "saved_model.pb")


def test_ci_runs_the_readme_test_command():
    command = re.search(r"```bash\n(python3 -m venv[^\n]*pytest[^\n]*)\n```",
                        README.read_text()).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci


def test_readme_new_keras_command_runs_the_test_command():
    text = README.read_text()
    command = re.search(r"```bash\n(python3 -m venv[^\n]*)\n```", text).group(1)
    new_keras = re.search(r"```bash\n(pip install --no-deps keras==X\.Y\.Z && [^\n]*)\n```",
                          text).group(1)
    assert new_keras.endswith(" && " + command[command.index("pytest"):])


def test_readme_states_the_pinned_ranges_of_pyproject():
    pyproject = (README.parent / "pyproject.toml").read_text()
    text = " ".join(README.read_text().split())
    pins = dict(re.findall(r'"(keras|tensorflow|jax)(>=[\d.]+,<[\d.]+)"', pyproject))
    assert set(pins) == {"keras", "tensorflow", "jax"}, "each needs a lower and upper bound"
    assert f"`keras{pins['keras']}`" in text
    for package in ("tensorflow", "jax"):
        assert f"`{package}{pins[package].split(',')[1]}`" in text


def test_readme_table_names_only_registered_methods_and_pair_presets():
    from keras_l2t.methods import METHODS
    from keras_l2t.pairs import PAIR_PRESETS

    text = README.read_text()
    methods = set(re.findall(r"--method=(\w+)", text))
    presets = set(re.findall(r"--pairs=(\w+)", text))
    assert methods == set(METHODS)
    assert presets and presets <= set(PAIR_PRESETS)
