"""K written posts in run configs, the matrix plan, retraining and the report (issue 19).

The report cases build synthetic run folders whose summaries follow the K-post contract
(``evasion_by_k``, ``posts_to_evade_hist`` / ``_median``, ``quality_by_k``; ceiling.json
``posts``), so they test the report alone, fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from advseq.errors import ConfigError
from advseq.report import POSTS_SECTION, SECTIONS, build_report
from advseq.report.loading import AttackResult
from advseq.report.posts_sections import curve_series
from advseq.report.retraining import evasion_by_k_cell
from advseq.run_config import load_config

EVIL = "<img src=x onerror=alert(1)>"          # a detector label that must stay text


# --------------------------------------------------------------------------- run configs

def matrix(**run: Any) -> dict[str, Any]:
    return {"run": {"name": "k", "ceiling": True, **run}, "datasets": [{"name": "demo", "demo": True}],
            "detectors": [{"name": "cnn", "params": {"epochs": 1}}, {"name": "tfidf-lr"}],
            "attacks": [{"name": "copycat", "modes": ["white-box", "transfer"]}],
            "retrain": [{"detector": "cnn", "attack": "copycat", "rounds": 1}]}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


TOML = """[run]
name = "k"
posts = {posts}

[[datasets]]
name = "demo"
demo = true

[[detectors]]
name = "tfidf-lr"

[[attacks]]
name = "copycat"
posts = {atk_posts}

[[retrain]]
detector = "tfidf-lr"
attack = "copycat"
posts = {rt_posts}
"""


@pytest.mark.parametrize(("posts", "atk_posts", "rt_posts", "needle"), [
    ("0", "1", "1", r"run\.toml:3: \[run\] posts: must be an integer in \[1, 64\] or a list of them, got 0"),
    ("[1, 2, 2]", "1", "1", r"run\.toml:3: \[run\] posts: K = 2 is listed twice"),
    ("[1, 65]", "1", "1", r"run\.toml:3: \[run\] posts: item 1: must be an integer in \[1, 64\]"),
    ("[]", "1", "1", r"\[run\] posts: must be a list of 1 to 64 integers"),
    ("true", "1", "1", r"\[run\] posts: must be an integer in \[1, 64\] or a list of them, got True"),
    ("1", "[4, 4]", "1", r"run\.toml:14: \[\[attacks\]\] #1 posts: K = 4 is listed twice"),
    ("1", '"4"', "1", r"\[\[attacks\]\] #1 posts: must be an integer"),
    ("1", "1", "[2]", r"run\.toml:19: \[\[retrain\]\] #1 posts: must be an integer in \[1, 64\]"),
    ("1", "1", "65", r"\[\[retrain\]\] #1 posts: must be an integer in \[1, 64\], got 65"),
])
def test_bad_posts_are_one_line_naming_the_key(posts: str, atk_posts: str, rt_posts: str, needle: str,
                                               tmp_path: Path) -> None:
    path = write(tmp_path, TOML.format(posts=posts, atk_posts=atk_posts, rt_posts=rt_posts))
    with pytest.raises(ConfigError, match=needle) as err:
        load_config(path, out=tmp_path / "out")
    assert "\n" not in str(err.value)


def test_posts_parse_run_wide_per_attack_and_retrain(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, TOML.format(posts="[1, 2, 4, 8]", atk_posts="[1, 4]", rt_posts="4")),
                      out=tmp_path / "out")
    assert cfg.posts == [1, 2, 4, 8] and cfg.attacks[0].posts == [1, 4] and cfg.retrain[0].posts == 4
    assert cfg.attack_posts(cfg.attacks[0]) == [1, 4]
    scalar = load_config({**matrix(posts=4)}, out=tmp_path / "o")
    assert scalar.posts == [4] and scalar.attack_posts(scalar.attacks[0]) == [4]
    d = scalar.to_dict()
    assert d["posts"] == [4] and "posts" not in d["attacks"][0] and "posts" not in d["retrain"][0]


def test_shipped_posts_config_parses() -> None:
    from advseq.paths import REPO_DIR

    try:
        cfg = load_config(REPO_DIR / "configs" / "wiki-posts.toml", out="/tmp/unused")
    except ConfigError as err:
        if "shared" in str(err):
            pytest.skip(str(err))
        raise
    assert cfg.posts == [1, 2, 4, 8] and cfg.ceiling


def test_one_post_config_records_no_posts(tmp_path: Path) -> None:
    """K = 1 (said or not) leaves run.json's config exactly as before K existed."""
    plain = load_config(matrix(), out=tmp_path / "o").to_dict()
    said = load_config({**matrix(posts=[1]), "retrain": [{"detector": "cnn", "attack": "copycat",
                                                           "rounds": 1, "posts": 1}]},
                       out=tmp_path / "o").to_dict()
    assert plain == said
    assert "posts" not in json.dumps(plain)
    # an attack that says [1] under a run-wide [1, 4] is recorded: it means something
    raw = matrix(posts=[1, 4])
    raw["attacks"][0]["posts"] = [1]
    assert load_config(raw, out=tmp_path / "o").to_dict()["attacks"][0]["posts"] == [1]


def test_plan_gives_one_unit_per_k_and_keeps_the_one_post_keys(demo: Any, tmp_path: Path) -> None:
    from advseq.pipeline import plan

    def units(raw: dict[str, Any]) -> list[Any]:
        return plan(load_config(raw, out=tmp_path / "run"), {"demo": demo})

    base = units(matrix())
    raw = matrix(posts=[1, 2, 4])
    raw["attacks"].append({"name": "hotflip", "modes": ["white-box"], "posts": [8]})
    raw["retrain"].append({"detector": "cnn", "attack": "copycat", "rounds": 1, "posts": 4})
    swept = units(raw)
    old = {(u.kind, u.label): u.path for u in base}
    for u in swept:                     # every K = 1 unit has the folder it had without posts
        if "posts" not in u.info:
            assert old[(u.kind, u.label)] == u.path, u.label
    assert set(old) <= {(u.kind, u.label) for u in swept}
    atk = [u for u in swept if u.kind == "attack"]
    copy_wb = [u for u in atk if u.info["attack"] == "copycat" and u.info["mode"] == "white-box"
               and u.info["detector"] == "cnn"]
    assert [u.info.get("posts", 1) for u in copy_wb] == [1, 2, 4]
    assert len({u.path for u in copy_wb}) == 3
    assert all(f"-k{u.info['posts']}-" in u.path.name for u in copy_wb[1:])
    assert [u.info.get("posts", 1) for u in atk if u.info["attack"] == "hotflip"] == [8, 8]
    ceil = [u for u in swept if u.kind == "ceiling"]
    assert [u.info.get("posts", 1) for u in ceil] == [1, 2, 4, 8]       # cnn only: tf-idf has no soft tokens
    assert [u.label for u in ceil][:2] == ["demo: one-post ceiling of cnn", "demo: 2-post ceiling of cnn"]
    loops = [u for u in swept if u.kind == "retrain"]
    assert loops[0].path == old[("retrain", loops[0].label)] and loops[1].info["posts"] == 4
    assert loops[1].path != loops[0].path


def test_plan_passes_k_to_the_attack_the_ceiling_and_the_loop(demo: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import advseq.ceiling
    import advseq.evaluation
    import advseq.retrain
    from advseq.pipeline import plan

    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(advseq.evaluation, "run_attack", lambda *a, spec, **kw: seen.append(("attack", spec.posts)))
    monkeypatch.setattr(advseq.ceiling, "run_ceiling", lambda *a, spec, **kw: seen.append(("ceiling", spec.posts)))
    monkeypatch.setattr(advseq.retrain, "retrain_loop", lambda *a, spec, **kw: seen.append(("retrain", spec.posts)))
    raw = matrix(posts=[1, 3])
    raw["retrain"][0]["posts"] = 2
    for u in plan(load_config(raw, out=tmp_path / "run"), {"demo": demo}):
        if u.kind != "detector":
            u.run()
    assert ("attack", 3) in seen and ("attack", 1) in seen
    assert ("ceiling", 3) in seen and ("retrain", 2) in seen


# --------------------------------------------------------------------------- retraining

def test_round_cell_shows_evasion_at_each_k() -> None:
    assert evasion_by_k_cell({"evasion_by_k": [0.2, 0.35, None], "evasion_rate": None}) == "0.200 / 0.350 / –"
    assert evasion_by_k_cell({"evasion_rate": 0.5}) == "0.500"


def test_retrain_loop_with_k_posts(tiny: Any, tmp_path: Path) -> None:
    """The loop's attacker writes K posts: the round table has evasion after each k, and the
    augmented training users carry the posts written for them."""
    from advseq.retrain import retrain_loop

    res = retrain_loop(tiny, "tfidf-lr", "copycat", tmp_path / "rt", rounds=1, seed=0, posts=2,
                       mode="label", progress=False)
    for row in res["rounds"]:
        assert len(row["evasion_by_k"]) == 2
        assert row["evasion_by_k"][-1] == row["evasion_rate"]
    assert res["config"]["spec"]["posts"] == 2
    added = [json.loads(line) for line in (tmp_path / "rt" / "round_0" / "augmented.jsonl").read_text().splitlines()]
    by_id = {u.user_id: u for u in tiny}
    extra = [len(a["posts"]) - len(by_id[a["user_id"].split("#")[0]].posts) for a in added]
    assert extra and set(extra) <= {1, 2}
    with pytest.raises(ConfigError, match="posts"):
        retrain_loop(tiny, "tfidf-lr", "copycat", tmp_path / "bad", rounds=1, posts=0, progress=False)


# --------------------------------------------------------------------------- the report

def _summary(attack: str, mode: str, K: int, evasion: list[float], hist: dict[str, int] | None,
             quality: bool = False) -> dict[str, Any]:
    n_eligible = 4
    s: dict[str, Any] = {
        "attack": attack, "mode": mode, "goal": "evasion", "placement": "append", "detector": EVIL,
        "n_users": 8, "n_targeted": 4, "n_eligible": n_eligible, "attack_success_rate": evasion[-1] / 2,
        "evasion_rate": evasion[-1], "goal_success_rate": evasion[-1],
        "before": {"f1": 0.8, "accuracy": 0.8}, "after": {"f1": 0.8 - evasion[-1] / 2, "accuracy": 0.7},
        "queries_mean": 1.0, "queries_median": 1.0, "budget": None, "budget_exhausted": 0, "failed": 0,
        "attack_seconds": 0.1, "posts_per_second": 40.0, "prepare_seconds": 0.0}
    if K > 1:
        reached = [k for k, n in (hist or {}).items() if k != "none" for _ in range(n)]
        s.update(posts=K, evasion_by_k=evasion, goal_success_by_k=evasion, posts_to_evade_hist=hist,
                 posts_to_evade_median=float(sorted(map(int, reached))[len(reached) // 2]) if reached else None,
                 distinct_violations=0)
    if quality:
        block = {"bleu_2": 0.5, "perplexity_judge": 100.0, "copy_exact": 0.0}
        s["quality"] = {"attack": block, "real": {"bleu_2": 0.6, "perplexity_judge": 80.0, "copy_exact": 0.0},
                        "n_posts": 4 * K, "judge": "test-judge", "topic_corpus": "none", "notes": [], "seconds": 0.1}
        s["quality_by_k"] = [{**block, "perplexity_judge": 100.0 + 20 * k, "n_posts": 4} for k in range(K)]
    return s


def _record(uid: str, K: int, probs: list[float]) -> dict[str, Any]:
    rec = {"user_id": uid, "label": 1, "targeted": True, "clean_prob": 0.9, "attacked_prob": probs[-1],
           "clean_pred": 1, "attacked_pred": int(probs[-1] >= 0.5), "eligible": True,
           "success": probs[-1] < 0.5, "flipped": probs[-1] < 0.5, "queries": 1, "seconds": 0.01,
           "status": "ok", "post": f"post {K} by {EVIL}", "context": None}
    if K > 1:
        rec.update(posts=[f"post {k} by {EVIL}" for k in range(1, len(probs) + 1)], probs=probs,
                   posts_to_evade=next((k for k, p in enumerate(probs, 1) if p < 0.5), None))
    return rec


def make_run(root: Path, *, with_k: bool = True) -> Path:
    """A run folder (no data file: the examples omit real posts) with one detector, PETGEN
    white-box at K = 1, 2, 4, copycat transfer at K = 4, and ceilings at K = 1, 4."""
    units: list[dict[str, Any]] = [{"kind": "detector", "label": "train", "path": "models/det",
                                    "dataset": "toy", "detector": EVIL, "surrogate": False, "status": "done"}]
    (root / "models" / "det").mkdir(parents=True)
    (root / "models" / "det" / "metrics.json").write_text(json.dumps({"f1": 0.8, "accuracy": 0.8, "roc_auc": 0.9}))
    attacks = [("petgen", "white-box", 1, [0.25], None, False),
               ("petgen", "white-box", 2, [0.25, 0.5], {"1": 1, "2": 1, "none": 2}, False),
               ("petgen", "white-box", 4, [0.25, 0.5, 0.5, 0.75], {"1": 1, "2": 1, "3": 0, "4": 1, "none": 1}, True),
               ("copycat", "transfer", 4, [0.0, 0.0, 0.25, 0.25], {"1": 0, "2": 0, "3": 1, "4": 0, "none": 3}, False)]
    for attack, mode, K, ev, hist, q in attacks:
        if K > 1 and not with_k:
            continue
        rel = f"attacks/{attack}-{mode}-k{K}"
        d = root / rel
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_summary(attack, mode, K, ev, hist, q)))
        probs = [0.9, 0.4, 0.3, 0.2][:K]
        (d / "results.jsonl").write_text(json.dumps(_record("u1", K, probs)) + "\n")
        units.append({"kind": "attack", "label": f"{attack} {K}", "path": rel, "dataset": "toy",
                      "detector": EVIL, "attack": attack, "mode": mode, "status": "done",
                      **({"posts": K} if K > 1 else {})})
    for K, relaxed in ((1, 0.5), (4, 0.9)):
        if K > 1 and not with_k:
            continue
        rel = f"ceiling/det-k{K}"
        (root / rel).mkdir(parents=True)
        (root / rel / "ceiling.json").write_text(json.dumps({
            "detector": EVIL, "n_users": 8, "n_eligible": 4, "relaxed_rate": relaxed, "token_rate": relaxed / 2,
            **({"posts": K} if K > 1 else {})}))
        units.append({"kind": "ceiling", "label": f"ceiling {K}", "path": rel, "dataset": "toy",
                      "detector": EVIL, "status": "done", **({"posts": K} if K > 1 else {})})
    (root / "datasets" / "toy").mkdir(parents=True)
    (root / "datasets" / "toy" / "info.json").write_text(json.dumps({"name": "toy", "users": 8}))
    (root / "index.json").write_text(json.dumps({
        "config": {"name": "synthetic", "posts": [1, 2, 4], "datasets": [{"name": "toy"}],
                   "detectors": [{"name": EVIL, "detector": "cnn"}]},
        "datasets": {"toy": "datasets/toy/info.json"}, "units": units}))
    return root


@pytest.fixture(scope="module")
def k_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("kpost")
    files = build_report([make_run(root / "run")], root / "report")
    return {"files": files, "md": files.markdown.read_text(), "html": files.html.read_text()}


def test_report_has_the_posts_section_after_the_attack_matrix(k_report: dict[str, Any]) -> None:
    md = k_report["md"]
    assert f"\n## 5. {POSTS_SECTION[1]}\n" in md and "\n## 4. Attack matrix\n" in md
    assert f'<section id="{POSTS_SECTION[0]}">' in k_report["html"]
    names = [p.name for p in k_report["files"].figures]
    assert any("posts-curve" in n for n in names)
    assert any("posts-hist" in n for n in names)
    assert any("posts-quality" in n for n in names)
    for p in k_report["files"].figures:
        assert p.stat().st_size > 5000


def _table(md: str, caption_start: str) -> list[list[str]]:
    block = md.split(f"**Table.** {caption_start}", 1)[1].split("\n\n", 2)[1]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block.splitlines()[2:]]


def test_curve_and_median_tables_hold_the_summaries_numbers(k_report: dict[str, Any]) -> None:
    md = k_report["md"]
    curve = _table(md, "Evasion rate against K")
    rows = {(r[1], r[2]): r[3:] for r in curve}
    assert rows[("petgen", "white-box")] == ["0.250", "0.500", "0.750"]          # K = 1, 2, 4
    assert rows[("copycat", "transfer")] == ["0.000*", "0.000*", "0.250"]         # within the K = 4 unit
    assert rows[("K-post ceiling", "relaxed")] == ["0.500", "–", "0.900"]
    median = _table(md, "Median posts to evade")
    assert median[0][1:] == ["2.0 (3 of 4 within 4)", "3.0 (1 of 4 within 4)"]
    quality = _table(md, "Text quality of the k-th written posts")
    assert [r[3] for r in quality[:4]] == ["1", "2", "3", "4"]
    assert "5. Written posts" in md and "the largest K" in md


def test_curve_series_joins_units_of_different_k() -> None:
    def unit(K: int, ev: list[float]) -> AttackResult:
        s = {"evasion_rate": ev[-1], **({"evasion_by_k": ev} if K > 1 else {})}
        return AttackResult("r", "d", "det", "a", "white-box", "done", Path("."), summary=s, posts=K)

    (s,) = curve_series([unit(8, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]), unit(1, [0.15]), unit(4, [0.1, 0.2, 0.35, 0.45])])
    assert s["points"] == [(1, 0.15, True), (2, 0.2, False), (3, 0.35, False), (4, 0.45, True),
                           (5, 0.5, False), (6, 0.6, False), (7, 0.7, False), (8, 0.8, True)]


def test_report_escapes_user_text(k_report: dict[str, Any]) -> None:
    html, md = k_report["html"], k_report["md"]
    assert EVIL not in html
    assert EVIL not in re.sub(r"```text\n.*?\n```", "", md, flags=re.S)   # only in the config's code block
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not re.search(r"<img(?! src=\"data:image/png;base64,)", html)
    assert "(1) post 1 by" in md                          # the examples list each written post
    assert "0.900 → 0.400 → 0.300 → 0.200" in md


def test_one_post_report_has_no_posts_section(tmp_path: Path) -> None:
    files = build_report([make_run(tmp_path / "run", with_k=False)], tmp_path / "report")
    md = files.markdown.read_text()
    assert POSTS_SECTION[1] not in md and "K=" not in md
    titles = re.findall(r"\n## \d+\. (.+)\n", md)
    assert titles == [t for _, t in SECTIONS]
    assert not any("posts-" in p.name for p in files.figures)


@pytest.mark.slow
def test_k_post_run_to_report_end_to_end(tmp_path: Path) -> None:
    """A real K sweep through run_matrix and build_report: the core's K-post summaries
    feed the curve, the median table and the retraining table."""
    from advseq import robustness_run

    res = robustness_run({
        "run": {"name": "e2e", "quality": False, "max_users": 24, "posts": [1, 2]},
        "datasets": [{"name": "demo", "demo": True}], "detectors": [{"name": "tfidf-lr"}],
        "attacks": [{"name": "copycat", "modes": ["label"]}],
        "retrain": [{"detector": "tfidf-lr", "attack": "copycat", "mode": "label", "rounds": 1, "posts": 2}],
    }, out=tmp_path / "run", progress=False)
    atk = [u for u in res["index"]["units"] if u["kind"] == "attack"]
    assert [u.get("posts", 1) for u in atk] == [1, 2] and all(u["status"] == "done" for u in atk)
    summary = json.loads((tmp_path / "run" / atk[1]["path"] / "summary.json").read_text())
    md = res["report"].markdown.read_text()
    curve = _table(md, "Evasion rate against K")
    assert curve[0][3:] == [f"{json.loads((tmp_path / 'run' / atk[0]['path'] / 'summary.json').read_text())['evasion_rate']:.3f}",
                            f"{summary['evasion_by_k'][-1]:.3f}"]
    assert "Median posts to evade" in md and "evasion after k = 1, 2, …" in md
