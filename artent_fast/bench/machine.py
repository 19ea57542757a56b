"""What this machine is: device, driver, CUDA, library versions, and which backends load (and why not)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

import torch

from artent_fast.backends import native, registry

PACKAGES = (
    "torch",
    "triton",
    "cupy-cuda13x",
    "cupy-cuda12x",
    "numpy",
    "transformers",
    "peft",
    "safetensors",
    "flash-attn",
    "matplotlib",
    "tqdm",
)


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def gpu_info(device: str) -> dict[str, Any]:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(torch.device(device))
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return {
        "name": props.name,
        "capability": f"sm_{props.major}{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "driver": driver.splitlines()[0] if driver else None,
        "cuda_runtime": torch.version.cuda,
    }


def machine_info(device: str) -> dict[str, Any]:
    """A JSON-ready description of the machine and of the backends as the registry sees them."""
    nvcc = _run(["nvcc", "--version"])
    ext = None
    if registry._load("cuda"):
        ext = getattr(sys.modules["artent_fast.backends.cuda_ops"]._ext, "__file__", None)
    errors = registry.load_errors()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": gpu_info(device),
        "torch_cuda": torch.version.cuda,
        "nvcc": nvcc.splitlines()[-1] if nvcc else None,
        "packages": {p: version(p) for p in PACKAGES if version(p) is not None},
        "backends": [{"name": b, "loaded": b not in errors, "reason": errors.get(b)} for b in registry.BACKENDS],
        "cuda_extension": ext,
        "cpu_extension": {"enabled": native.enabled(), "reason": native.load_error()},
        "forced_backend": os.environ.get("ARTENT_FAST_BACKEND") or None,
        "autotune": registry.autotune_enabled(),
    }


def machine_markdown(info: dict[str, Any]) -> str:
    gpu = info["gpu"]
    lines = ["## Machine", ""]
    if gpu:
        lines.append(
            f"- GPU: {gpu['name']} ({gpu['capability']}, {gpu['memory_gib']} GiB, {gpu['multiprocessors']} SMs), "
            f"driver {gpu['driver'] or 'unknown'}, CUDA runtime {gpu['cuda_runtime']}"
        )
    else:
        lines.append(f"- device: {info['device']} (no GPU used)")
    lines.append(
        f"- CPU: {info['cpu']}, {info['cpu_count']} cores, torch threads {info['torch_threads']}; "
        f"Python {info['python']}; {info['platform']}"
    )
    lines.append(f"- torch CUDA build: {info['torch_cuda'] or 'none'}; nvcc: {info['nvcc'] or 'not found'}")
    lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    lines += ["", "| backend | loads | reason it does not |", "|---|---|---|"]
    for b in info["backends"]:
        reason = (b["reason"] or "").replace("|", "\\|")
        lines.append(f"| {b['name']} | {'yes' if b['loaded'] else 'no'} | {reason} |")
    if info["cuda_extension"]:
        lines.append(f"\nCUDA extension: `{info['cuda_extension']}`")
    cpu_ext = info["cpu_extension"]
    state = "used" if cpu_ext["enabled"] else f"not used ({cpu_ext['reason'] or 'turned off'})"
    lines.append(f"\nCompiled CPU path of the tracker (`artent_fast._cpu_densities`): {state}")
    return "\n".join(lines) + "\n"
