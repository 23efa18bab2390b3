"""Turns a pair specification into a list of (source layer, target layer) names."""

from __future__ import annotations

from collections.abc import Sequence

PAIR_PRESETS = ("all", "one_to_one", "single")


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
            not name its single pair, this is keras-l2t's choice), or an explicit list of
            (source layer name, target layer name).
        source_layers: Source layer names, needed by the presets.
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
            return [(source_layers[-1], target_layers[-1])]
        if len(source_layers) != len(target_layers):
            raise ValueError(
                "pairs='one_to_one' needs as many source layers as target layers, got "
                f"{len(source_layers)} and {len(target_layers)}."
            )
        return list(zip(source_layers, target_layers))

    resolved = []
    for pair in pairs:
        if (isinstance(pair, str) or len(pair) != 2
                or not all(isinstance(name, str) for name in pair)):
            raise ValueError(
                f"Each pair must be (source layer name, target layer name), got {pair!r}."
            )
        resolved.append((pair[0], pair[1]))
    if not resolved:
        raise ValueError("pairs is empty; give at least one (source, target) pair.")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"pairs lists the same pair twice: {resolved}.")
    return resolved
