"""The README's library example runs as written (in a scratch folder)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- tested: library example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its tested library example"
    return m.group(1)


@pytest.mark.slow                 # a whole run matrix and its report, as the README shows it
def test_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data" / "demo").mkdir(parents=True)
    shutil.copy(REPO / "data" / "demo" / "users.jsonl", tmp_path / "data" / "demo" / "users.jsonl")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "500 users, 250 malicious" in out
    run = tmp_path / "runs" / "library-demo"
    assert (run / "index.json").exists()
    assert (run / "report" / "report.html").stat().st_size > 10_000
    statuses = [line.split()[0] for line in out.splitlines() if line.startswith(("done", "not"))]
    assert statuses.count("done") >= 5          # cnn, surrogate, 3 attacks, retrain
    assert "report: runs/library-demo/report/report.html" in out
