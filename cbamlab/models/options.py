"""The attention options, in one place: `AttnOptions` and the checks every model option goes through.

`get_attn`, `create_model` and the config's model section all speak this vocabulary: adding an option here
(and to the config's `model` section, which passes every field of the same name) is the whole change.
"""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass

from ..errors import CbamlabError, unknown

POOL_TYPES = ("avg", "max", "lp", "lse")
ARRANGEMENTS = ("channel_first", "spatial_first", "parallel")
ATTN_IMPLS = ("auto", "native", "reference")


def positive_int(value, what: str) -> int:
    """`value` as an int (numpy integers too), or a CbamlabError naming `what`; bools and floats are refused."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise CbamlabError(f"{what} must be a positive integer, got {value!r}")
    return number


def odd_kernel(value) -> int:
    try:
        number = positive_int(value, "spatial attention kernel size")
    except CbamlabError:
        number = None
    if number is None or number % 2 == 0:
        raise CbamlabError(f"spatial attention kernel size must be a positive odd integer (3 or 7 in the paper), "
                           f"got {value!r}")
    return number


@dataclass(frozen=True)
class AttnOptions:
    """How a model's attention is built; each option applies where the attention has it and is ignored elsewhere.

    reduction: the channel MLP's hidden units are channels // reduction (CBAM and SE).
    kernel_size: the spatial gate's odd k x k convolution. arrangement: "channel_first" (the paper's),
    "spatial_first" or "parallel". spatial: False leaves CBAM's channel gate alone (the paper's channel-only
    ablation). spatial_bn_zero_init: the spatial gate's BN starts with gamma 0 (True, the authors' code) or 1.
    pool_types: the channel gate's descriptors ("avg", "max", "lp", "lse"). keep_map: keep the last maps.
    attn_impl: "auto" (default: native where it runs, else reference), "native" or "reference"; the same math
    and parameters (see `native`).
    Values are checked (and numpy integers turned into ints) on construction.
    """

    reduction: int = 16
    kernel_size: int = 7
    arrangement: str = "channel_first"
    spatial: bool = True
    spatial_bn_zero_init: bool = True
    pool_types: tuple = ("avg", "max")
    keep_map: bool = False
    attn_impl: str = "auto"

    def __post_init__(self):
        set_ = _setter(self)
        set_("reduction", positive_int(self.reduction, "attention reduction"))
        set_("kernel_size", odd_kernel(self.kernel_size))
        if self.arrangement not in ARRANGEMENTS:
            raise unknown("CBAM arrangement", self.arrangement, ARRANGEMENTS)
        if self.attn_impl not in ATTN_IMPLS:
            raise unknown("attention implementation", self.attn_impl, ATTN_IMPLS)
        pools = (self.pool_types,) if isinstance(self.pool_types, str) else tuple(self.pool_types)
        if not pools:
            raise CbamlabError("channel attention needs at least one pool type")
        for p in pools:
            if p not in POOL_TYPES:
                raise unknown("pool type", p, POOL_TYPES)
        set_("pool_types", pools)
        set_("spatial", bool(self.spatial))
        set_("spatial_bn_zero_init", bool(self.spatial_bn_zero_init))
        set_("keep_map", bool(self.keep_map))

    @classmethod
    def from_kwargs(cls, **kw) -> "AttnOptions":
        """AttnOptions(**kw), where an unknown name is a CbamlabError that lists the known ones."""
        extra = sorted(set(kw) - set(ATTN_OPTIONS))
        if extra:
            raise CbamlabError(f"unknown attention option(s) {', '.join(extra)}; known: {', '.join(ATTN_OPTIONS)}")
        return cls(**kw)

    def pick(self, names) -> dict:
        """{name: value} for the options in `names` (what one attention accepts)."""
        return {n: getattr(self, n) for n in names}


def _setter(obj):
    """A setter for a frozen dataclass's own __post_init__ (normalising the values it was given)."""
    return lambda name, value: object.__setattr__(obj, name, value)


ATTN_OPTIONS = tuple(f.name for f in dataclasses.fields(AttnOptions))
