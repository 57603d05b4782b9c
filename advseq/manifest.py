"""Run manifests: config, seed, versions and git hash, so every number can be traced."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from advseq.paths import REPO_DIR
from advseq.storage import atomic_write_json

TRACKED_PACKAGES = ("advseq", "torch", "transformers", "numpy", "scikit-learn", "pandas",
                    "nltk", "textattack", "sentence-transformers", "safetensors")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_revision(repo: Path = REPO_DIR) -> dict[str, Any]:
    """Commit hash and whether the working tree had uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip())
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str | None:
    """The processor's model name (Linux: /proc/cpuinfo), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def platform_info() -> dict[str, Any]:
    """Where a run ran. Float results are the same bits only on the same kind of CPU: torch
    and MKL pick their kernels by instruction set (``torch_cpu_capability``), and those
    round differently, so a manifest names both (the capability once torch is loaded)."""
    info: dict[str, Any] = {"system": platform.system(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "cpu": cpu_model()}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
            info["torch_threads"] = torch.get_num_threads()
        except (AttributeError, RuntimeError):
            pass
    return info


def build_manifest(config: dict[str, Any], *, seed: int | None = None,
                   data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "advseq_manifest": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "config": config,
        "seed": seed,
        "data": data,
        "versions": {"python": platform.python_version(), **package_versions()},
        "platform": platform_info(),
        "git": git_revision(),
        **extra,
    }


# The name most modules import for "write this JSON file atomically".
write_json = atomic_write_json
