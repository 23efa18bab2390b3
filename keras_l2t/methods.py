"""Which parts of L2T-ww a method uses: feature matching, learned "what", learned "where"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """What one transfer method trains.

    Attributes:
        name: Registry name.
        description: One line for users, with the paper it comes from.
        default_pairs: The pair preset used when none is given ("single", "one_to_one",
            "all"), or None for methods without layer pairs.
        matches_features: Whether the weighted feature-matching loss L_wfm is used.
        learns_channel_weights: Whether the "what" meta-networks are trained (otherwise
            channel weights are uniform, 1/C).
        learns_pair_weights: Whether the "where" meta-networks are trained (otherwise
            every pair weight is 1).
        matches_attention: Whether attention maps are matched at the pairs (AT).
        distills_outputs: Whether an extra target head reproduces the source's softened
            outputs (LwF).
    """

    name: str
    description: str
    default_pairs: str | None = None
    matches_features: bool = False
    learns_channel_weights: bool = False
    learns_pair_weights: bool = False
    matches_attention: bool = False
    distills_outputs: bool = False

    @property
    def meta_learned(self) -> bool:
        """Whether the method runs the lookahead and the meta step."""
        return self.learns_channel_weights or self.learns_pair_weights

    @property
    def uses_pairs(self) -> bool:
        """Whether the method matches anything at (source layer, target layer) pairs."""
        return self.matches_features or self.matches_attention


# The methods of the paper's table by name; `Method.description` says what each does.
METHODS = {
    method.name: method
    for method in (
        Method("scratch", "The target alone, trained with cross-entropy."),
        Method(
            "lwf",
            "Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017): an extra "
            "target head reproduces the source's outputs softened at temperature 2 "
            "(distillation weight 1).",
            distills_outputs=True,
        ),
        Method(
            "at",
            "Attention transfer (Zagoruyko & Komodakis, ICLR 2017): L2-normalised spatial "
            "attention maps (channel mean of A^2) matched at one-to-one pairs, beta 1000.",
            default_pairs="one_to_one",
            matches_attention=True,
        ),
        Method(
            "lwf_at",
            "LwF and attention transfer together.",
            default_pairs="one_to_one",
            matches_attention=True,
            distills_outputs=True,
        ),
        Method(
            "fm",
            "Feature matching (FitNets-style, Romero et al., ICLR 2015) with a 1x1 adapter: "
            "uniform channel weights, pair weight 1, no meta step; single pair by default.",
            default_pairs="single",
            matches_features=True,
        ),
        Method(
            "l2t_w",
            "L2T-w (Jang et al., ICML 2019): learned channel weights, pair weight 1; "
            "one-to-one pairs by default.",
            default_pairs="one_to_one",
            matches_features=True,
            learns_channel_weights=True,
        ),
        Method(
            "l2t_ww",
            "L2T-ww (Jang et al., ICML 2019): learned channel weights and pair weights on "
            "all pairs.",
            default_pairs="all",
            matches_features=True,
            learns_channel_weights=True,
            learns_pair_weights=True,
        ),
    )
}


def get_method(name: str) -> Method:
    """Returns the registered method `name`.

    Args:
        name: A key of `METHODS`: "l2t_ww", "l2t_w", "fm", "at", "lwf", "lwf_at" or
            "scratch".

    Returns:
        The `Method` (what it learns and which losses it uses).

    Raises:
        ValueError: for an unknown name, listing the valid ones.

    Example:
        >>> from keras_l2t.methods import get_method
        >>> get_method("l2t_ww").meta_learned
        True
    """
    if name not in METHODS:
        raise ValueError(f"Unknown method '{name}'. Choose one of {sorted(METHODS)}.")
    return METHODS[name]
