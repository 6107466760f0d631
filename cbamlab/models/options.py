"""The attention options, in one place: `AttnOptions`, their defaults and the checks every option goes through.

`get_attn`, `create_model` and the config's model section all speak this vocabulary: the config's `model`
section holds one `AttnOptions` (its fields are keys of the section: model.kernel_size, ...), so adding an
option here is the whole change. A bad value is an `OptionError` naming the option.
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


class OptionError(CbamlabError):
    """A value an attention option refuses. `option` names the option, `value` is what it was given, `rule` says
    what a value must be; `known` lists the choices where the option is one of a list (else None)."""

    def __init__(self, message: str, option: str | None = None, value=None, rule: str | None = None,
                 known: tuple | None = None):
        super().__init__(message)
        self.option, self.value, self.rule, self.known = option, value, rule, known


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
        for name, (check, rule, known) in _CHECKS.items():
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, check(value))  # frozen: the checked, normalised value
            except CbamlabError as e:
                raise OptionError(str(e), name, value, rule, known) from None

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


def _choice(kind: str, known: tuple):
    def check(value):
        if value not in known:
            raise unknown(kind, value, known)
        return value
    return check


def _pools(value) -> tuple:
    pools = (value,) if isinstance(value, str) else tuple(value)
    if not pools:
        raise CbamlabError("channel attention needs at least one pool type")
    for p in pools:
        if p not in POOL_TYPES:
            raise unknown("pool type", p, POOL_TYPES)
    twice = sorted({p for p in pools if pools.count(p) > 1})
    if twice:
        raise CbamlabError(f"pool type(s) {', '.join(twice)} listed twice")
    return pools


# option -> (check: the value normalised, or a CbamlabError; the rule a refused value breaks; the choices, where
# the option is one of a list). Every AttnOptions field has one: the checks of every attention option, in one place
_CHECKS = {
    "reduction": (lambda v: positive_int(v, "attention reduction"), "must be a positive integer", None),
    "kernel_size": (odd_kernel, "must be a positive odd integer (3 or 7 in the paper)", None),
    "arrangement": (_choice("CBAM arrangement", ARRANGEMENTS), None, ARRANGEMENTS),
    "spatial": (bool, None, None),
    "spatial_bn_zero_init": (bool, None, None),
    "pool_types": (_pools, f"must be a non-empty list of distinct pool types from {', '.join(POOL_TYPES)}", None),
    "keep_map": (bool, None, None),
    "attn_impl": (_choice("attention implementation", ATTN_IMPLS), None, ATTN_IMPLS),
}


ATTN_OPTIONS = tuple(f.name for f in dataclasses.fields(AttnOptions))
assert tuple(_CHECKS) == ATTN_OPTIONS, "every attention option has its check"
