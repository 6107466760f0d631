"""Precision and layout: the "auto" rule as a pure function of device facts, the config keys, and the record a
run keeps of what it used."""
import json
import sys

import pytest
import torch

from cbamlab.config import load_config
from cbamlab.engine import fit
from cbamlab.engine.runtime import DeviceFacts, autocast, device_facts, resolve_precision
from cbamlab.errors import ConfigError

fit_module = sys.modules["cbamlab.engine.fit"]  # the package exports the function under the same name

ZEN4 = DeviceFacts("cpu", "AVX512", frozenset({"avx2", "avx512f", "avx512_bf16"}))
SAPPHIRE_RAPIDS = DeviceFacts("cpu", "AVX512", frozenset({"avx512f", "amx_bf16", "amx_tile"}))
SKYLAKE = DeviceFacts("cpu", "AVX512", frozenset({"avx2", "avx512f"}))
HASWELL = DeviceFacts("cpu", "AVX2", frozenset({"avx2"}))
ARM = DeviceFacts("cpu", "DEFAULT", frozenset())
A100 = DeviceFacts("cuda", cuda_capability=(8, 0), cuda_bf16=True)
V100 = DeviceFacts("cuda", cuda_capability=(7, 0), cuda_bf16=False)
P100 = DeviceFacts("cuda", cuda_capability=(6, 0), cuda_bf16=False)


@pytest.mark.parametrize("facts, amp, channels_last", [
    (ZEN4, "bf16", True), (SAPPHIRE_RAPIDS, "bf16", True), (SKYLAKE, "none", True), (HASWELL, "none", False),
    (ARM, "none", False), (A100, "bf16", True), (V100, "none", True), (P100, "none", False),
])
def test_auto_rule(facts, amp, channels_last):
    p = resolve_precision("auto", "auto", facts)
    assert (p.amp, p.channels_last, p.eval_amp) == (amp, channels_last, "none")
    assert p.reason and "auto" not in (p.amp, p.channels_last)


def test_explicit_settings_pass_through():
    assert resolve_precision("none", False, ZEN4).as_dict() == {"amp": "none", "channels_last": False,
                                                               "reason": "as configured", "eval_amp": "none"}
    p = resolve_precision("bf16", True, HASWELL)  # asked for: given, even where not native, and evaluated in it
    assert (p.amp, p.eval_amp) == ("bf16", "bf16")
    p = resolve_precision("fp16", "auto", A100)
    assert (p.amp, p.channels_last) == ("fp16", True) and "amp" not in p.reason and "fp16" not in p.reason
    p = resolve_precision("auto", False, ZEN4)
    assert (p.amp, p.channels_last) == ("bf16", False) and "channels_last" not in p.reason


def test_this_machine_facts_and_autocast():
    facts = device_facts(torch.device("cpu"))
    assert facts.type == "cpu" and facts.cpu_capability == torch.backends.cpu.get_cpu_capability()
    with autocast(torch.device("cpu"), "auto"):  # what evaluation code passing the config's "auto" gets
        y = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
    assert y.dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == torch.bfloat16


@pytest.mark.parametrize("override, key, value", [
    ("train.channels_last=auto", "channels_last", "auto"), ("train.channels_last=true", "channels_last", True),
    ("train.channels_last=false", "channels_last", False), ("train.amp=none", "amp", "none"),
    ("train.amp=auto", "amp", "auto"),
])
def test_config_keys(override, key, value):
    assert getattr(load_config(None, [override]).train, key) == value


def test_config_defaults_and_bad_values():
    cfg = load_config()
    assert (cfg.train.amp, cfg.train.channels_last, cfg.model.attn.attn_impl) == ("auto", "auto", "auto")
    assert load_config({"train": {"channels_last": True}}).train.channels_last is True  # YAML bool
    assert load_config(None, ["model.attn_impl=reference"]).model.attn.attn_impl == "reference"
    with pytest.raises(ConfigError, match="train.channels_last"):
        load_config(None, ["train.channels_last=sometimes"])
    with pytest.raises(ConfigError, match="train.channels_last"):
        load_config({"train": {"channels_last": 3}})
    with pytest.raises(ConfigError, match="unknown train.amp 'bf32'"):
        load_config(None, ["train.amp=bf32"])
    with pytest.raises(ConfigError, match="unknown model.attn_impl 'slow'.*auto, native, reference"):
        load_config(None, ["model.attn_impl=slow"])


def test_fit_uses_and_records_the_resolved_choice(tmp_path, monkeypatch):
    seen = {"train": [], "eval": []}
    real_train, real_eval = fit_module.train_one_epoch, fit_module.evaluate

    def spy_train(*args, **kw):
        seen["train"].append((kw["amp"], kw["channels_last"]))
        return real_train(*args, **kw)

    def spy_eval(*args, **kw):
        seen["eval"].append((kw["amp"], kw["channels_last"]))
        return real_eval(*args, **kw)

    monkeypatch.setattr(fit_module, "train_one_epoch", spy_train)
    monkeypatch.setattr(fit_module, "evaluate", spy_eval)
    cfg = load_config(None, ["train.epochs=1", "train.batch_size=256", "model.name=resnet20", "train.threads=1",
                             "train.progress=false"])
    summary = fit(cfg, tmp_path / "run")
    expected = resolve_precision("auto", "auto", device_facts(torch.device("cpu")))
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["precision"] == expected.as_dict() and summary["precision"] == expected.as_dict()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["precision"] == expected.as_dict()
    assert seen["train"] == [(expected.amp, expected.channels_last)]
    assert seen["eval"] and set(seen["eval"]) == {("none", expected.channels_last)}
