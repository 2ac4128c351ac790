"""One precision policy for every stage that runs a model (ingest, search, finetune, the
projector and `ask`): `auto` is bf16 only where the hardware computes bf16 natively.

Why the hardware and not torch's own checks: on a CPU with AVX-512 but without AVX512-BF16,
bf16 is emulated; one such AVX2-only EPYC ran a bf16 matmul at 0.6 GFLOP/s against 40-56 in
fp32, while a Zen 5 EPYC with AVX512-BF16 ran ViT-B/32 ~4x faster in bf16 than in fp32."""

from __future__ import annotations

import contextlib
from pathlib import Path

from mmindex.errors import UserInputError

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags


def check_precision(requested: str) -> str:
    if requested not in PRECISIONS:
        raise UserInputError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                             f"not {requested!r}")
    return requested


def resolve_precision(requested: str = "auto", device: str = "cpu") -> str:
    """'fp32' or 'bf16': what `requested` means on `device` (a name or a torch.device)."""
    if check_precision(requested) != "auto":
        return requested
    if _device_type(device) == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume nothing
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def autocast(precision: str, device="cpu"):
    """bf16 autocast on `device` when the precision resolves to bf16; else a no-op context."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(_device_type(device), dtype=torch.bfloat16)


def _device_type(device) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]
