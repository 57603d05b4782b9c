"""Where advseq finds its bundled demo data and the shared real datasets."""

from __future__ import annotations

import os
from pathlib import Path

from advseq.errors import ResourceMissing

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def demo_data() -> Path:
    """The bundled demo dataset (``data/demo/users.jsonl`` of the source tree), or
    ``$ADVSEQ_DEMO_DATA``."""
    env = os.environ.get("ADVSEQ_DEMO_DATA")
    path = Path(env) if env else REPO_DIR / "data" / "demo" / "users.jsonl"
    if not path.exists():
        raise ResourceMissing(
            f"demo data not found at {path}; install advseq from a source checkout "
            "(`pip install -e .`) or regenerate it with "
            "`advseq data simulate --users 500 --seed 0 --out data/demo/users.jsonl`")
    return path


def shared_data_dir() -> Path | None:
    """Real datasets: ``$ADVSEQ_DATA``, else ``../shared/data`` beside the checkout, else
    None (tests and benchmarks that need it skip)."""
    env = os.environ.get("ADVSEQ_DATA")
    for cand in ([Path(env)] if env else []) + [REPO_DIR.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


def shared_dataset(name: str) -> Path | None:
    root = shared_data_dir()
    if root is None:
        return None
    path = root / name / "users.jsonl"
    return path if path.is_file() else None
