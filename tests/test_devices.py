"""Device choice and `train.mixed_precision: auto`."""

import pytest
import torch

from lgvq import devices
from lgvq.devices import resolve_device, resolve_mixed_precision


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    monkeypatch.setattr(devices, "native_bf16", lambda device: False)
    assert resolve_mixed_precision("auto", "cpu") == "no"  # an AVX2-only CPU emulates bf16, ~10x slower
    monkeypatch.setattr(devices, "native_bf16", lambda device: True)
    assert resolve_mixed_precision("auto", "cpu") == "bf16"
    assert resolve_mixed_precision("no", "cpu") == "no" and resolve_mixed_precision("bf16", "cpu") == "bf16"


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="auto, no, fp16, bf16"):
        resolve_mixed_precision("fp8")


def test_device_defaults_to_cpu_when_accelerate_is_told_so(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
