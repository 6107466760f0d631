"""The variants of a comparison: registered models, or named models with options (the CBAM paper's ablations).

`compare.variants` lists either form:

    variants:
      - resnet20                                   # a registered model with the recipe's options
      - resnet20_cbam
      - {name: cbam_k3, model: resnet20_cbam, options: {kernel_size: 3}}
      - {name: channel_only, model: resnet20_cbam, options: {spatial: false}}

A named variant's options are keys of the config's model section; they override the recipe's for that variant
alone. The name is the variant's folder (OUT/<dataset>/<name>/seed<k>) and, recorded in the run's config as
`model.label`, the label the report shows and groups by.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import LABEL, ModelConfig, section_keys
from ..errors import ConfigError, suggest, unknown
from ..models import list_models

_KEYS = ("name", "model", "options")
# model-section keys an option variant may set: everything but what the variant itself names
OPTION_KEYS = tuple(k.name for k in section_keys(ModelConfig) if k.name not in ("name", "label"))


@dataclass(frozen=True)
class Variant:
    """label: the folder and report name; model: a registered model; options: model-section overrides."""

    label: str
    model: str
    options: dict = field(default_factory=dict)

    @property
    def named(self) -> bool:
        return bool(self.options) or self.label != self.model

    def record(self):
        """As compare.json records it: the model name for a plain variant, else its mapping."""
        return {"name": self.label, "model": self.model, "options": dict(self.options)} if self.named else self.model

    def model_section(self, base: dict) -> dict:
        """The recipe's model section (a mapping) with this variant's model, options and label."""
        section = {**base, **self.options, "name": self.model}
        section["label"] = self.label if self.named else None
        return section


def _parse_one(item, index: int) -> Variant:
    where = f"compare.variants[{index}]"
    if isinstance(item, str):
        return Variant(label=item, model=item)
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a model name or a mapping with {', '.join(_KEYS)}, got {item!r}")
    for k in item:
        if k not in _KEYS:
            raise ConfigError(f"{where}: unknown key '{k}'{suggest(k, _KEYS)}; known: {', '.join(_KEYS)}")
    name, model, options = item.get("name"), item.get("model"), item.get("options") or {}
    if not isinstance(name, str) or LABEL.fullmatch(name) is None:
        raise ConfigError(f"{where}.name={name!r}: a variant needs a name of 1-64 letters, digits, '_', '-', '.' "
                          "or '+', starting with a letter or digit (it names the variant's folder)")
    if not isinstance(model, str):
        raise ConfigError(f"{where} ({name}): 'model' must name a registered model, got {model!r}")
    if not isinstance(options, dict):
        raise ConfigError(f"{where} ({name}): 'options' must be a mapping of model keys, got {options!r}")
    for k in options:
        if k not in OPTION_KEYS:
            raise ConfigError(f"{where} ({name}): unknown option 'model.{k}'{suggest(k, OPTION_KEYS)}; known: "
                              f"{', '.join(OPTION_KEYS)}")
    if name != model and name in list_models():
        raise ConfigError(f"{where}: the name '{name}' is a registered model but the variant builds {model}; "
                          "give it a name of its own")
    return Variant(label=name, model=model, options=dict(options))


def parse_variants(value) -> list[Variant]:
    """`compare.variants` (a list, or a comma-separated string of model names) as Variants; names and
    (model, options) pairs must be distinct, and every model registered."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"compare.variants: expected a non-empty list of model names or named variants, "
                          f"got {value!r}")
    variants = [_parse_one(item, i) for i, item in enumerate(value)]
    known = list_models()
    for v in variants:
        if v.model not in known:
            raise unknown("model", v.model, known)
    labels = [v.label for v in variants]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"compare.variants: listed twice: {', '.join(dup)}")
    seen: dict[str, str] = {}
    for v in variants:
        key = repr((v.model, sorted(v.options.items())))
        if key in seen:
            raise ConfigError(f"compare.variants: {seen[key]} and {v.label} build the same model with the same "
                              "options")
        seen[key] = v.label
    return variants
