"""The one precision policy: auto is bf16 only on hardware with native bf16."""

import pytest
import torch

from mmindex.core import precision
from mmindex.errors import UserInputError


def test_an_unknown_precision_is_a_user_error():
    with pytest.raises(UserInputError, match="precision"):
        precision.resolve_precision("fp8")


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("auto", torch.device("cpu")) == expected
    assert precision.resolve_precision("fp32", "cpu") == "fp32"  # an explicit choice stands
    assert precision.resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize("requested,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_computes_in_the_resolved_precision(requested, dtype):
    a = torch.ones(4, 4)
    with precision.autocast(requested, "cpu"):
        assert (a @ a).dtype == dtype


def test_auto_means_the_same_for_every_stage(monkeypatch):
    """Ingest (load_encoder), finetune and the projector all resolve through one function."""
    from mmindex.models import registry
    from mmindex.train import loop

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert registry.resolve_precision is precision.resolve_precision
    assert loop.autocast is precision.autocast
