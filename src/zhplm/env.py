"""What this machine runs natively: CPU flags, whether bf16 is fast here, the dtype `auto` picks.

bf16 pays only where the hardware has it: on CPUs with AMX (`amx_bf16`) or AVX512-BF16
(`avx512_bf16`) a bf16 GEMM is about 2x faster than fp32; on AVX2-only CPUs it is emulated
and about 6x *slower*. Every place that chooses a precision (the pre-training recipe's
`train.dtype`, `FinetuneConfig.dtype`, `pipeline(..., dtype=)`, the CLI's `--dtype`) takes
`auto | fp32 | bf16` and resolves it here:

    resolve_dtype("auto")                     # "bf16" where native, else "fp32"
    resolve_dtype("bf16", flags={"avx2"})     # "bf16", with one warning that it will be slow
    env_report()                              # torch, threads, CPU, native bf16 and why

Nothing is read at import time; the CPU flags are read once, on first use.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zhplm.errors import ConfigError

logger = logging.getLogger("zhplm")

DTYPE_CHOICES = ("auto", "fp32", "bf16")
DTYPE_ALIASES = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "bf16": "bf16",
                 "bfloat16": "bf16"}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # either makes bf16 GEMMs native on x86
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA, formerly DNNL_MAX_CPU_ISA) below AVX512-BF16: with one
# of these oneDNN runs bf16 GEMMs without bf16 instructions, i.e. slowly.
ONEDNN_NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                       "AVX512_CORE_VNNI")
CPUINFO = Path("/proc/cpuinfo")

# Explicit bf16 on hardware without native bf16 is warned about once per process.
_slow_bf16_warned = False


@dataclass(frozen=True)
class Bf16Support:
    """Whether bf16 is native on a device, and why (the flag found, or what is missing)."""

    native: bool
    reason: str


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, its feature flags, and where the flags came from."""

    model: str
    flags: frozenset[str]
    source: str


def bf16_support(flags: Iterable[str], device: str = "cpu", *,
                 cuda_bf16: bool = False, capability: str | None = None,
                 onednn_max_isa: str | None = None) -> Bf16Support:
    """Decide whether bf16 is native (pure: no hardware is queried).

    `flags` are CPU feature flags as in /proc/cpuinfo (`amx_bf16`, `avx512_bf16`, `avx2`, ...);
    `device` is a device kind ("cpu" or "cuda"); `cuda_bf16` is what
    `torch.cuda.is_bf16_supported()` says, used when `device` is "cuda". `capability` (torch's
    CPU capability) and `onednn_max_isa` (the `ONEDNN_MAX_CPU_ISA` setting) say whether
    torch may use those instructions: a torch held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`,
    `ONEDNN_MAX_CPU_ISA=AVX2`) runs bf16 as slowly as an AVX2-only CPU.
    """
    if device == "cuda":
        return Bf16Support(cuda_bf16, "the CUDA device supports bf16" if cuda_bf16
                           else "the CUDA device has no native bf16")
    if device != "cpu":
        return Bf16Support(False, f"no bf16 rule for device {device!r}")
    flags = set(flags)
    found = next((flag for flag in BF16_CPU_FLAGS if flag in flags), None)
    if found is None:
        return Bf16Support(False, f"no {' or '.join(BF16_CPU_FLAGS)} among the CPU flags")
    if capability is not None and capability.upper().startswith("AVX2"):
        return Bf16Support(False, f"CPU flag {found}, but torch's CPU capability is held "
                                  f"to {capability}")
    if onednn_max_isa and onednn_max_isa.strip().upper() in ONEDNN_NO_BF16_ISAS:
        return Bf16Support(False, f"CPU flag {found}, but ONEDNN_MAX_CPU_ISA={onednn_max_isa}")
    return Bf16Support(True, f"CPU flag {found}")


@functools.cache
def cpu_info() -> CpuInfo:
    """This CPU's model and flags: /proc/cpuinfo when it exists, else torch's capability
    ("AVX512" -> {"avx2", "avx512f"}, which cannot tell bf16 support). Read once."""
    model, flags = "", None
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace") if CPUINFO.is_file() else ""
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:  # x86 "flags", ARM "Features"
            flags = frozenset(value.split())
    if flags is not None:
        return CpuInfo(model or platform.processor(), flags, str(CPUINFO))
    capability = cpu_capability()
    implied = {"AVX512": {"avx2", "avx512f"}, "AVX2": {"avx2"}}.get(capability, set())
    return CpuInfo(model or platform.processor() or platform.machine(), frozenset(implied),
                   f"torch cpu capability {capability}")


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (see `cpu_info`)."""
    return cpu_info().flags


@functools.cache
def cpu_capability() -> str:
    """The SIMD level torch's CPU kernels use here ("AVX512", "AVX2", ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def native_bf16(device: str = "cpu", flags: Iterable[str] | None = None) -> Bf16Support:
    """Whether bf16 is native on this machine's `device` (`flags` replace the CPU's own)."""
    if device == "cuda":
        return bf16_support((), "cuda", cuda_bf16=torch.cuda.is_bf16_supported())
    if flags is not None:
        return bf16_support(flags, device)
    return bf16_support(cpu_flags(), device, capability=cpu_capability(),
                        onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA",
                                                      os.environ.get("DNNL_MAX_CPU_ISA")))


def normalize_dtype(requested: str | torch.dtype, where: str = "dtype") -> str:
    """"auto", "fp32" or "bf16" for a requested precision (aliases float32/bfloat16 and the
    torch dtypes are accepted); anything else raises `ConfigError` naming `where`."""
    if isinstance(requested, torch.dtype):
        for name, dtype in TORCH_DTYPES.items():
            if requested == dtype:
                return name
    elif isinstance(requested, str) and requested.strip().lower() in DTYPE_ALIASES:
        return DTYPE_ALIASES[requested.strip().lower()]
    raise ConfigError(f"{where}={requested!r} is not a precision zhplm runs; choose one of "
                      f"{', '.join(DTYPE_CHOICES)} (auto: bf16 where the hardware has it)")


def requested_dtype(dtype: str | torch.dtype, bf16: bool | None = None, *,
                    where: str = "dtype") -> str:
    """The precision a config asks for, reading the deprecated `bf16` key too:
    `bf16: true` means dtype "bf16", `bf16: false` means "fp32" -- unless `dtype` is set to
    fp32 or bf16, which wins (so an override `dtype=fp32` beats an old file's `bf16: true`);
    the ignored key is named in a warning."""
    name = normalize_dtype(dtype, where)
    if bf16 is None:
        return name
    legacy = "bf16" if bf16 else "fp32"
    if name == "auto":
        return legacy
    if name != legacy:
        logger.warning("%s=%s wins over the deprecated bf16=%s (drop bf16 from the config)",
                       where, name, str(bf16).lower())
    return name


def resolve_dtype(requested: str | torch.dtype, *, device: str = "cpu",
                  flags: Iterable[str] | None = None, where: str = "dtype") -> str:
    """The precision to run: "fp32" or "bf16".

    `auto` is bf16 only where it is native (CPU: AMX or AVX512-BF16; CUDA:
    `torch.cuda.is_bf16_supported()`), else fp32. An explicit bf16 without native support
    still runs bf16, with one warning per process that it will be slow. `flags` replace
    the CPU's own (for tests and for deciding on behalf of another machine).
    """
    name = normalize_dtype(requested, where)
    if name == "fp32":
        return name
    support = native_bf16(device, flags)
    if name == "auto":
        return "bf16" if support.native else "fp32"
    if not support.native:
        _warn_slow_bf16(where, support)
    return name


def _warn_slow_bf16(where: str, support: Bf16Support) -> None:
    global _slow_bf16_warned
    if _slow_bf16_warned:
        return
    _slow_bf16_warned = True
    logger.warning("%s=bf16 without native bf16 here (%s): it runs, but slowly (~6x slower "
                   "than fp32 on AVX2-only CPUs); use dtype auto or fp32", where,
                   support.reason)


def env_report(device: str = "cpu", flags: Iterable[str] | None = None) -> dict[str, Any]:
    """What this machine runs natively: torch version, threads, CPU model and capability,
    whether bf16 is native and why, and the dtype `auto` picks."""
    info = cpu_info()
    support = native_bf16(device, flags)
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "cpu": info.model,
        "cpu_capability": cpu_capability(),
        "cpu_flags_source": info.source if flags is None else "given",
        "bf16_native": support.native,
        "bf16_reason": support.reason,
        "auto_dtype": "bf16" if support.native else "fp32",
    }


def env_line(report: dict[str, Any] | None = None) -> str:
    """`env_report()` as one line, e.g. "torch 2.13.0, 2 threads, Xeon (AVX2): bf16 not
    native (no amx_bf16 or avx512_bf16 among the CPU flags); dtype auto = fp32"."""
    r = env_report() if report is None else report
    native = "bf16 native" if r["bf16_native"] else "bf16 not native"
    return (f"torch {r['torch']}, {r['threads']} threads, {r['cpu'] or 'unknown CPU'} "
            f"({r['cpu_capability']}): {native} ({r['bf16_reason']}); "
            f"dtype auto = {r['auto_dtype']}")
