"""``advseq report``: Markdown and self-contained HTML from real run folders.

One tiny real run (120 demo users, tf-idf + a one-epoch CNN, copycat and HotFlip, one
retraining round) is built once per module; the other cases copy and edit its JSON.
The browser test renders the HTML in headless Chromium (Debian package ``chromium``)
and is skipped when it is not installed.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from advseq.report import SECTIONS, build_report

REPO = Path(__file__).resolve().parents[1]
TINY = "{epochs = 1, emb_dim = 16, filters = 8, seq_hidden = 8}"
CONFIG = f"""
[run]
name = "fixture"
quality = false
max_users = 16
ceiling = true
ceiling_steps = 30

[[datasets]]
name = "mini"
path = "data/users.jsonl"

[[detectors]]
name = "tfidf-lr"

[[detectors]]
name = "cnn"
params = {TINY}

[surrogate]
detector = "cnn"
params = {TINY}

[[attacks]]
name = "copycat"
modes = ["white-box", "label"]

[[attacks]]
name = "hotflip"
modes = ["white-box"]

[[retrain]]
detector = "cnn"
attack = "copycat"
rounds = 1
"""
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: 60 users per class of the demo data (with its card)."""
    from advseq.pipeline import load_config, run_matrix

    root = tmp_path_factory.mktemp("report_run")
    (root / "data").mkdir()
    kept, seen = [], {0: 0, 1: 0}
    for line in (REPO / "data" / "demo" / "users.jsonl").read_text(encoding="utf-8").splitlines():
        label = json.loads(line)["label"]
        if seen[label] < 60:
            kept.append(line)
            seen[label] += 1
    (root / "data" / "users.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    shutil.copy(REPO / "data" / "demo" / "README.md", root / "data" / "README.md")
    (root / "run.toml").write_text(CONFIG, encoding="utf-8")
    run_matrix(load_config(root / "run.toml", out=root / "run"), progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report")
    files = build_report([run_dir], out)
    return {"out": out, "files": files,
            "md": files.markdown.read_text(encoding="utf-8"),
            "html": files.html.read_text(encoding="utf-8")}


class Page(HTMLParser):
    """Tags, ids, images, links and tables (by id) of an HTML page; checks nesting."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.imgs: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.errors: list[str] = []
        self._stack: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)
        for key in ("src", "href", "srcset", "poster", "data"):
            if key in a:
                self.urls.append(a[key])
        if tag not in VOID:
            self._stack.append(tag)
        if tag == "table":
            self._table = a.get("id", f"anon{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self._stack or self._stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self._stack[-1] if self._stack else None}>")
        else:
            self._stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def rows_by(table: list[list[str]], n_key: int) -> dict[tuple[str, ...], dict[str, str]]:
    """Body rows keyed by their first ``n_key`` cells, as {header: cell}."""
    header, body = table[0], table[1:]
    return {tuple(r[:n_key]): dict(zip(header, r, strict=True)) for r in body}


def same(cell: str, value: float | None) -> bool:
    """A table cell shows ``value`` at the cell's own precision ('–' for None)."""
    if value is None:
        return cell == "–"
    decimals = len(cell.split(".")[1]) if "." in cell else 0
    return abs(float(cell) - value) <= 0.5 * 10 ** -decimals + 1e-9


def units(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((run_dir / "index.json").read_text())["units"]


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- markdown and HTML

def test_markdown_has_every_section_and_figure(report: dict[str, Any]) -> None:
    md = report["md"]
    for i, (_, title) in enumerate(SECTIONS, 1):
        assert f"\n## {i}. {title}\n" in md
    links = re.findall(r"!\[[^\]]+\]\((figures/[^)]+\.png)\)", md)
    assert len(links) >= 3  # heatmap, F1 bars, retraining curve
    for link in links:
        assert (report["out"] / link).stat().st_size > 5000
    assert "<summary>Dataset card" in md                    # the copied README.md
    assert "Not run" in md                                  # text quality was off


def test_html_is_self_contained_and_well_formed(report: dict[str, Any]) -> None:
    page = parse(report["html"])
    assert not page.errors, page.errors[:5]
    assert {sid for sid, _ in SECTIONS} <= page.ids
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert page.imgs and len(page.imgs) == len(report["files"].figures)
    for img in page.imgs:
        assert img["alt"].strip()
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    for url in page.urls:                                   # nothing fetched from anywhere
        assert url.startswith(("data:image/png;base64,", "#")), url
    assert "figcaption" in page.tags
    assert "<details><summary>Dataset card" in report["html"]


def test_tables_equal_the_json_results(run_dir: Path, report: dict[str, Any]) -> None:
    page = parse(report["html"])
    index = units(run_dir)
    # detectors
    det = rows_by(page.tables["tbl-detectors-mini"], 1)
    for u in (u for u in index if u["kind"] == "detector"):
        m = load(run_dir / u["path"] / "metrics.json")
        label = u["detector"] + (" (attacker's surrogate)" if u["surrogate"] else "")
        row = det[(label,)]
        for col, key in (("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
                         ("accuracy", "accuracy"), ("ROC-AUC", "roc_auc"), ("PR-AUC", "pr_auc"),
                         ("train s", "train_seconds")):
            assert same(row[col], m[key]), (label, col, row[col], m[key])
    # attack matrix, including the not-applicable units and their reasons
    matrix = rows_by(page.tables["tbl-matrix-mini"], 3)
    for u in (u for u in index if u["kind"] == "attack"):
        row = matrix[(u["detector"], u["attack"], u["mode"])]
        if u["status"] == "not applicable":
            assert row["status"].startswith("n/a [")
            assert u["reason"] in report["html"]
            continue
        s = load(run_dir / u["path"] / "summary.json")
        assert same(row["evasion rate"], s["evasion_rate"])
        assert same(row["attack success rate"], s["attack_success_rate"])
        assert same(row["F1 before"], s["before"]["f1"])
        assert same(row["F1 after"], s["after"]["f1"])
        assert row["eligible"] == str(s["n_eligible"])
        cost = rows_by(page.tables["tbl-cost-mini"], 3)[(u["detector"], u["attack"], u["mode"])]
        assert same(cost["queries mean"], s["queries_mean"])
        assert same(cost["attack s"], s["attack_seconds"])
    # one-post ceiling: cnn reads soft tokens, tfidf-lr does not (no unit, a dash)
    ceil = [u for u in index if u["kind"] == "ceiling"]
    assert [u["detector"] for u in ceil] == ["cnn"]
    c = load(run_dir / ceil[0]["path"] / "ceiling.json")
    assert same(matrix[("cnn", "one-post ceiling", "relaxed")]["evasion rate"], c["relaxed_rate"])
    assert same(matrix[("cnn", "one-post ceiling", "witness tokens")]["evasion rate"], c["token_rate"])
    head = rows_by(page.tables["tbl-headline"], 2)
    assert same(head[("mini", "cnn")]["one-post ceiling"], c["relaxed_rate"])
    assert head[("mini", "tfidf-lr")]["one-post ceiling"] == "–"
    # shortcut audit
    info = load(run_dir / "datasets" / "mini" / "info.json")
    audit = rows_by(page.tables["tbl-audit-mini"], 1)
    for r in info["shortcut_audit"]:
        assert same(audit[(r["shortcut"],)]["accuracy"], r["accuracy"])
    # retraining rounds
    rt = next(u for u in index if u["kind"] == "retrain")
    rounds = load(run_dir / rt["path"] / "rounds.json")
    table = next(t for k, t in page.tables.items() if k.startswith("tbl-retrain-"))
    body = rows_by(table, 1)
    for r in rounds["rounds"]:
        row = body[(str(r["round"]),)]
        assert same(row["clean F1"], r["f1"]) and same(row["evasion rate"], r["evasion_rate"])
    assert "Verdict:" in report["md"]
    # markdown shows the same numbers
    m = load(run_dir / next(u["path"] for u in index if u["label"].endswith("train tfidf-lr")) / "metrics.json")
    line = next(x for x in report["md"].splitlines() if x.startswith("| tfidf-lr | tfidf-lr |"))
    assert f"| {m['f1']:.3f} |" in line


def test_examples_quote_real_and_written_posts_escaped(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    unit = next(u for u in units(copy) if u["kind"] == "attack" and u["status"] == "done")
    results = copy / unit["path"] / "results.jsonl"
    recs = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines()]
    evil = '<script>alert("x")</script> <img src=x onerror=alert(1)> | pipe & co'
    for r in recs:
        if r["targeted"]:
            r["post"] = evil
    results.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    files = build_report([copy], tmp_path / "out", examples=2)
    html_text = files.html.read_text(encoding="utf-8")
    page = parse(html_text)
    assert "script" not in page.tags and all(i["src"].startswith("data:") for i in page.imgs)
    assert "&lt;script&gt;alert" in html_text
    written = [t for k, t in page.tables.items() if k.startswith("tbl-written-")]
    real = [t for k, t in page.tables.items() if k.startswith("tbl-real-")]
    assert len(written) == 2 and len(real) == 2
    assert any(evil in row for t in written for row in t)
    md = files.markdown.read_text(encoding="utf-8")
    assert "<script>" not in md and "\\| pipe &amp; co" in md


def test_combined_runs_with_quality(run_dir: Path, tmp_path: Path) -> None:
    """Two runs (the second a copy with text-quality results added) make one report."""
    copy = tmp_path / "run_q"
    shutil.copytree(run_dir, copy)
    index = load(copy / "index.json")
    index["config"]["name"] = "fixture-q"
    index["units"] = [u for u in index["units"] if u["kind"] != "retrain"]
    (copy / "index.json").write_text(json.dumps(index), encoding="utf-8")
    injected = {}
    for k, u in enumerate(u for u in index["units"] if u["kind"] == "attack" and u["status"] == "done"):
        path = copy / u["path"] / "summary.json"
        s = load(path)
        q = {"bleu_2": 0.31 + k / 100, "self_bleu_2": 0.2, "perplexity_judge": 120.25 + k,
             "perplexity_ref": 9.5, "topic_sim_context": 0.6, "style_similarity": 0.7}
        s["quality"] = {"attack": q, "real": {"bleu_2": 0.277, "perplexity_judge": 237.8},
                        "n_posts": s["n_targeted"], "judge": "test", "notes": [], "seconds": 1.0}
        if k == 0:                  # the first writes with the judge's model
            s["quality"]["not_independent"] = {"perplexity_judge": "the attack writes with test"}
            marked = (f"{u['detector']} (fixture-q)", u["attack"], u["mode"])
        path.write_text(json.dumps(s), encoding="utf-8")
        injected[(f"{u['detector']} (fixture-q)", u["attack"], u["mode"])] = q
    files = build_report([run_dir, copy], tmp_path / "out")
    page = parse(files.html.read_text(encoding="utf-8"))
    assert not page.errors
    quality = page.tables["tbl-quality-mini"]
    body = {tuple(r[1:4]): dict(zip(quality[0], r, strict=True)) for r in quality[1:]}
    for key, q in injected.items():
        for metric, value in q.items():
            cell = body[key][metric]
            assert cell.endswith(" †") == (key == marked and metric == "perplexity_judge"), (key, metric)
            assert same(cell.removesuffix(" †"), value), (key, metric)
    assert "†: no independent opinion" in files.markdown.read_text(encoding="utf-8")
    yard = next(r for r in quality[1:] if r[1] == "real posts (yardstick)")
    assert same(dict(zip(quality[0], yard, strict=True))["bleu_2"], 0.277)
    md = files.markdown.read_text(encoding="utf-8")
    assert "tfidf-lr (fixture)" in md and "tfidf-lr (fixture-q)" in md
    assert any("quality" in p.name for p in files.figures)
    assert len(page.imgs) == len(files.figures) == 4      # + the quality scatter


def test_partial_run_is_reported_not_fatal(run_dir: Path, tmp_path: Path) -> None:
    """A killed run (no summary for one attack, no rounds yet) and a moved data file."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    index = load(copy / "index.json")
    unit = next(u for u in index["units"] if u["kind"] == "attack" and u["status"] == "done")
    (copy / unit["path"] / "summary.json").unlink()
    rt = next(u for u in index["units"] if u["kind"] == "retrain")
    (copy / rt["path"] / "rounds.json").unlink()
    index["config"]["datasets"][0]["path"] = str(tmp_path / "moved.jsonl")
    (copy / "index.json").write_text(json.dumps(index), encoding="utf-8")
    files = build_report([copy], tmp_path / "out")
    md = files.markdown.read_text(encoding="utf-8")
    assert "summary.json not found" in md and "No rounds recorded" in md
    assert "Real posts omitted" in md
    assert not parse(files.html.read_text(encoding="utf-8")).errors


def test_cli_report(run_dir: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from advseq.cli import _Group
    from advseq.cli.report import register

    app = typer.Typer(cls=_Group)

    @app.callback()
    def root() -> None:
        """advseq."""

    register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.html").exists() and (tmp_path / "r" / "report.md").exists()
    res = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "not a run folder" in res.output


# --------------------------------------------------------------------------- browser

def _chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.skip("headless browser test needs Chromium (Debian: apt-get install -y chromium)")
    return found


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


# Chromium logs every console message (console.error included) and uncaught exceptions as
# `INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)`; its ERROR-level lines are
# D-Bus noise in a container, so "ERROR" alone means nothing. The report has no script,
# so any console line is a failure.
CONSOLE = re.compile(r":CONSOLE[:(]|Uncaught")
# Added to a *copy* of the report only: records, per image, whether the browser decoded
# it and where it was laid out, so the dumped DOM and the screenshot can be checked.
PROBE = """<script>
addEventListener("load", () => {
  for (const img of document.images) {
    const r = img.getBoundingClientRect();
    img.setAttribute("data-probe", [img.complete ? 1 : 0, img.naturalWidth, img.naturalHeight,
      Math.round(r.left), Math.round(r.top + scrollY), Math.round(r.width), Math.round(r.height)].join(","));
  }
});
</script>"""


@pytest.mark.slow                 # four headless-browser runs
def test_report_renders_in_headless_chromium(report: dict[str, Any], tmp_path: Path) -> None:
    binary = _chromium()
    # Calibrate: a deliberate console.error and an uncaught exception must be seen.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("deliberate");'
                   'throw new Error("boom");</script></body></html>', encoding="utf-8")
    probe = _run_chromium(binary, tmp_path / "p0", "--dump-dom", bad.as_uri())
    assert "deliberate" in probe.stderr and "Uncaught" in probe.stderr, probe.stderr[-2000:]

    # The report itself: no console message, every section and figure in the DOM.
    dom = _run_chromium(binary, tmp_path / "p1", "--dump-dom", report["files"].html.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [x for x in dom.stderr.splitlines() if CONSOLE.search(x)]
    assert not console, console
    rendered = parse(dom.stdout)
    assert {sid for sid, _ in SECTIONS} <= rendered.ids
    assert len(rendered.imgs) == len(report["files"].figures)

    # A probed copy: every image decoded, laid out with a size.
    probed = report["out"] / "probed.html"
    probed.write_text(report["html"].replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    try:
        dom = _run_chromium(binary, tmp_path / "p2", "--window-size=1280,4000", "--dump-dom",
                            probed.as_uri())
        boxes = [list(map(int, img["data-probe"].split(","))) for img in parse(dom.stdout).imgs]
        assert len(boxes) == len(report["files"].figures), dom.stderr[-2000:]
        for done, nat_w, nat_h, _, _, w, h in boxes:
            assert done == 1 and nat_w > 300 and nat_h > 150 and w > 300 and h > 100

        shot = tmp_path / "shot.png"
        res = _run_chromium(binary, tmp_path / "p3", f"--screenshot={shot}", "--window-size=1280,4000",
                            "--hide-scrollbars", probed.as_uri())
    finally:
        probed.unlink()
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        px = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50        # not one colour: a real page
    visible = [b for b in boxes if b[4] + b[6] <= 4000]
    assert visible, "no figure in the first 4000 px"
    for _, _, _, x, y, w, h in visible:                           # figures are drawn, not blank
        region = px[y:y + h, x:x + w]
        inked = (region.min(axis=2) < 200).mean()
        assert inked > 0.02 and len(np.unique(region.reshape(-1, 3), axis=0)) > 20, (x, y, inked)


def test_provenance_names_the_cpu_kind() -> None:
    import torch  # noqa: F401  (platform_info reads the capability once torch is loaded)

    from advseq.manifest import platform_info
    from advseq.report.run_sections import _platform

    info = platform_info()
    assert info["torch_cpu_capability"] in _platform(info)
    assert _platform({"system": "Linux", "machine": "x86_64", "cpus": 2}) == "Linux x86_64, 2 CPUs"
    assert _platform({"system": "Linux", "machine": "x86_64", "cpus": 2, "cpu": "Xeon",
                      "torch_cpu_capability": "AVX512"}) == "Linux x86_64, 2 CPUs (Xeon, AVX512)"
