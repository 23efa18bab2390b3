"""Turns a pair specification into a list of (source layer, target layer) names.

With several sources (`TransferModel(source={"name": model, ...})`) a source layer is
written "name/layer": Keras layer names cannot contain "/", so the first "/" splits it.
"""

from __future__ import annotations

from collections.abc import Sequence

PAIR_PRESETS = ("all", "one_to_one", "single")


def source_of(source_layer: str) -> str:
    """The source name of a "name/layer" source layer; "" for a plain layer name.

    Example:
        >>> from keras_l2t.pairs import source_of
        >>> source_of("imagenet/stage3_out"), source_of("stage3_out")
        ('imagenet', '')
    """
    return source_layer.partition("/")[0] if "/" in source_layer else ""


def resolve_pairs(
    pairs: str | Sequence[Sequence[str]],
    source_layers: Sequence[str] | None = None,
    target_layers: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """Resolves `pairs` to explicit (source layer name, target layer name) pairs.

    Args:
        pairs: "all" (every source layer with every target layer, source-major as in the
            reference: (s1, t1), (s1, t2), ...), "one_to_one" (the k-th with the k-th),
            "single" (the last source layer with the last target layer; the paper does
            not name its single pair, this is keras-l2t's choice; with several sources,
            each source's last layer with the last target layer), or an explicit list of
            (source layer name, target layer name) or (source name, source layer name,
            target layer name), the latter read as ("source/layer", target layer).
        source_layers: Source layer names ("name/layer" with several sources), needed by
            the presets.
        target_layers: Target layer names, needed by the presets.

    Returns:
        The list of pairs.

    Raises:
        ValueError: for an unknown preset, a preset without layer lists, layer lists of
            different lengths for "one_to_one", or a malformed or duplicated pair.

    Example:
        >>> from keras_l2t.pairs import resolve_pairs
        >>> resolve_pairs("all", ["s1", "s2"], ["t1"])
        [('s1', 't1'), ('s2', 't1')]
        >>> resolve_pairs("single", ["a/s1", "a/s2", "b/s1"], ["t1", "t2"])
        [('a/s2', 't2'), ('b/s1', 't2')]
    """
    if isinstance(pairs, str):
        if pairs not in PAIR_PRESETS:
            raise ValueError(
                f"Unknown pairs preset '{pairs}'. Use one of {PAIR_PRESETS} or a list of "
                "(source layer name, target layer name) pairs."
            )
        if not source_layers or not target_layers:
            raise ValueError(
                f"pairs='{pairs}' needs source_layers=[...] and target_layers=[...], the "
                "layer names to pair."
            )
        if pairs == "all":
            return [(s, t) for s in source_layers for t in target_layers]
        if pairs == "single":
            last = {source_of(layer): layer for layer in source_layers}
            return [(layer, target_layers[-1]) for layer in last.values()]
        if len(source_layers) != len(target_layers):
            raise ValueError(
                "pairs='one_to_one' needs as many source layers as target layers, got "
                f"{len(source_layers)} and {len(target_layers)}."
            )
        return list(zip(source_layers, target_layers))

    resolved = []
    for pair in pairs:
        if (isinstance(pair, str) or len(pair) not in (2, 3)
                or not all(isinstance(name, str) and name for name in pair)):
            raise ValueError(
                "Each pair must be (source layer name, target layer name) or (source name, "
                f"source layer name, target layer name), got {pair!r}."
            )
        resolved.append((pair[0], pair[1]) if len(pair) == 2
                        else (f"{pair[0]}/{pair[1]}", pair[2]))
    if not resolved:
        raise ValueError("pairs is empty; give at least one (source, target) pair.")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"pairs lists the same pair twice: {resolved}.")
    return resolved
