"""docs/experiments.md lists every refusal of the experiment with its message."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "experiments.md").read_text()
ERRORS = ("ExperimentError", "NonFiniteLoss")


def _literal_pieces(node: ast.AST) -> list[str]:
    """The literal text of a message expression, cut at every value put into it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [part.value for part in node.values if isinstance(part, ast.Constant)]
    if isinstance(node, ast.IfExp):
        return _literal_pieces(node.body) + _literal_pieces(node.orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _literal_pieces(node.func.value)  # "...".replace(...)
    return []


def _messages() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted((ROOT / "keras_l2t" / "experiment").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ERRORS
                    and node.args):
                pieces = [p.strip() for p in _literal_pieces(node.args[0])]
                found.append((f"{path.name}:{node.lineno}", [p for p in pieces if len(p) >= 20]))
    return found


def test_the_scan_finds_the_refusals():
    # Guards the scan itself: it sees the work directory's refusals and their texts.
    messages = dict(_messages())
    assert len(messages) > 40
    assert any("is being written by another run" in " ".join(pieces)
               for pieces in messages.values())


@pytest.mark.parametrize("where, pieces", _messages(), ids=[w for w, _ in _messages()])
def test_every_refusal_is_in_the_docs(where, pieces):
    missing = [piece for piece in pieces if piece not in DOCS]
    assert not missing, f"{where}: add its message to docs/experiments.md: {missing}"
