"""advseq.training bounds oneDNN's primitive cache (one entry per convolution shape, which
grew by gigabytes over an epoch of varied batch shapes) unless the user chose a size."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW = "import os, advseq.training; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"


@pytest.mark.parametrize(("given", "expected"), [(None, "32"), ("7", "7")])
def test_cache_capacity_is_bounded_unless_given(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if given is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = given
    out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == expected
