"""Which parts of L2T-ww a method uses: feature matching, learned "what", learned "where"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """What one transfer method trains.

    Attributes:
        name: Registry name.
        matches_features: Whether the feature-matching loss L_wfm is used at all.
        learns_channel_weights: Whether the "what" meta-networks are trained (otherwise
            channel weights are uniform, 1/C).
        learns_pair_weights: Whether the "where" meta-networks are trained (otherwise
            every pair weight is 1).
        description: One line for users, with the paper it comes from.
    """

    name: str
    matches_features: bool
    learns_channel_weights: bool
    learns_pair_weights: bool
    description: str

    @property
    def meta_learned(self) -> bool:
        """Whether the method runs the lookahead and the meta step."""
        return self.learns_channel_weights or self.learns_pair_weights


METHODS = {
    method.name: method
    for method in (
        Method("scratch", False, False, False, "The target alone, cross-entropy."),
        Method(
            "fm", True, False, False,
            "Feature matching (FitNets-style, Romero et al. 2015) on the given pairs: "
            "uniform channel weights, pair weight 1, no meta step.",
        ),
        Method(
            "l2t_w", True, True, False,
            "L2T-w (Jang et al. 2019): learned channel weights, pair weight 1.",
        ),
        Method(
            "l2t_ww", True, True, True,
            "L2T-ww (Jang et al. 2019): learned channel weights and pair weights.",
        ),
    )
}


def get_method(name: str) -> Method:
    """Returns the registered method `name`, or raises a ValueError listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"Unknown method '{name}'. Choose one of {sorted(METHODS)}.")
    return METHODS[name]
