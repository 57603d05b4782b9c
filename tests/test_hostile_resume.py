"""Resume never loses or mixes records; a damaged split or model folder is refused.

Every hostile case runs the CLI in-process and must end with exit 2 and one line on
stderr naming the culprit file (and line), never a traceback or an internal error;
where a case is accepted (a torn last line, ``--repair``) nothing may be lost or counted
twice: the run's results hold each of its test users exactly once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advseq.cli import app
from advseq.evaluation import RESULTS_FILE, RUN_FILE, SUMMARY_FILE, subset_users
from advseq.paths import demo_data
from advseq.resume import META_FILE
from advseq.training import MANIFEST_FILE, SPLIT_FILE, recorded_split

runner = CliRunner()
N_USERS = 40        # three batches of 16, 16 and 8
TIMING = {"attack_seconds", "posts_per_second", "prepare_seconds"}


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    return result.exit_code, result.stdout, result.stderr


def assert_refused(outcome: tuple[int, str, str], *culprit: str) -> str:
    code, out, err = outcome
    assert "Traceback" not in out + err and "internal error" not in err, err
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for text in culprit:
        assert text in lines[0], lines[0]
    return lines[0]


def attack(detector: Path, out: Path, *extra: str, users: int = N_USERS) -> tuple[int, str, str]:
    return invoke("attack", demo_data(), "-d", detector, "-a", "copycat", "-o", out,
                  "--max-users", str(users), "--no-quality", "--no-progress", *extra)


def lines(run: Path) -> list[str]:
    return (run / RESULTS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)


def write_lines(run: Path, new: list[str]) -> None:
    (run / RESULTS_FILE).write_text("".join(new), encoding="utf-8")


def untimed(raw: list[str]) -> list[dict]:
    """The records, without the seconds each took, in user order."""
    recs = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in raw]
    return sorted(recs, key=lambda r: r["user_id"])


def summary(run: Path) -> dict:
    s = json.loads((run / SUMMARY_FILE).read_text())
    return {k: v for k, v in s.items() if k not in TIMING}


def run_users(demo, cnn_dir: Path, n: int = N_USERS) -> list[str]:
    return [u.user_id for u in subset_users(recorded_split(cnn_dir, demo).test.users, n, 0)]


def assert_complete(run: Path, expected: list[str], reference: Path | None = None) -> None:
    """Each of the run's users once in results.jsonl and in the summary."""
    ids = [json.loads(x)["user_id"] for x in lines(run)]
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
    assert json.loads((run / SUMMARY_FILE).read_text())["n_users"] == len(expected)
    if reference is not None:
        assert summary(run) == summary(reference)


@pytest.fixture(scope="module")
def finished(cnn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished copycat run on 40 test users of the session cnn."""
    out = tmp_path_factory.mktemp("runs") / "base"
    code, _, err = attack(cnn_dir, out)
    assert code == 0, err
    assert len(lines(out)) == N_USERS
    return out


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    (copy / SUMMARY_FILE).unlink()          # as if the run had not finished
    return copy


def _record(finished: Path, i: int) -> dict:
    return json.loads(lines(finished)[i])


def _edit(field: str, value: object):
    def make(rec: dict) -> str:
        rec = dict(rec)
        if value is KeyError:
            del rec[field]
        else:
            rec[field] = value
        return json.dumps(rec) + "\n"
    return make


# (case id, how line 3 is replaced, text the error must hold after "results.jsonl:3: ")
CORRUPT = [
    ("torn_json", lambda r: json.dumps(r)[:40] + "\n", "malformed JSON"),
    ("empty_line", lambda r: "\n", "empty line"),
    ("a_list", lambda r: "[1, 2]\n", "not a JSON object (got list)"),
    ("null", lambda r: "null\n", "not a JSON object (got null)"),
    ("a_string", lambda r: '"hello"\n', "not a JSON object (got str)"),
    ("missing_label", _edit("label", KeyError), "field 'label': missing"),
    ("missing_user_id", _edit("user_id", KeyError), "field 'user_id': missing"),
    ("user_id_int", _edit("user_id", 7), "field 'user_id': must be a string"),
    ("label_bool", _edit("label", True), "field 'label': must be 0 or 1"),
    ("label_2", _edit("label", 2), "field 'label': must be 0 or 1"),
    ("prob_text", _edit("clean_prob", "high"), "field 'clean_prob': must be a number in [0, 1]"),
    ("prob_above_one", _edit("attacked_prob", 1.5), "field 'attacked_prob': must be a number"),
    ("prob_nan", lambda r: json.dumps({**r, "clean_prob": float("nan")}) + "\n",
     "field 'clean_prob': must be a number"),
    ("success_int", _edit("success", 1), "field 'success': must be true or false"),
    ("queries_negative", _edit("queries", -1), "field 'queries': must be a whole number >= 0"),
    ("post_number", _edit("post", 5), "field 'post': must be a string or null"),
    ("info_list", _edit("info", [1]), "field 'info': must be an object"),
    ("status_inconsistent", lambda r: json.dumps({**r, "targeted": not r["targeted"]}) + "\n",
     "field"),
    ("bad_utf8", lambda r: '{"user_id": "\udcff"}\n', "not valid UTF-8"),
    ("deep_nesting", lambda r: "[" * 100_000 + "]" * 100_000 + "\n", "malformed JSON"),
    ("huge_integer", lambda r: json.dumps(r)[:-1] + ', "x": ' + "9" * 5000 + "}\n",
     "malformed JSON"),
]


@pytest.mark.parametrize("make, problem", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_middle_line_is_refused(run: Path, finished: Path, make, problem: str) -> None:
    old = lines(run)
    new = [*old[:2], make(_record(finished, 2)), *old[3:]]
    raw = "".join(new).encode("utf-8", "surrogateescape")
    (run / RESULTS_FILE).write_bytes(raw)
    line = assert_refused(attack(_detector(run), run, "--resume"),
                          f"{run / RESULTS_FILE}:3: {problem}", "--repair")
    assert "more bad line" not in line
    assert (run / RESULTS_FILE).read_bytes() == raw          # refused: nothing touched
    assert not (run / SUMMARY_FILE).exists()


def _detector(run: Path) -> Path:
    return Path(json.loads((run / RUN_FILE).read_text())["detector"])


def test_several_bad_lines_are_counted_in_one_line(run: Path) -> None:
    old = lines(run)
    write_lines(run, [old[0], "oops\n", *old[1:5], "{}\n", *old[5:]])
    assert_refused(attack(_detector(run), run, "--resume"),
                   f"{RESULTS_FILE}:2: malformed JSON", "(and 1 more bad line)")


def test_repair_keeps_every_valid_record(run: Path, finished: Path, demo, cnn_dir: Path) -> None:
    old = lines(run)
    new = list(old)
    new[1] = "garbage\n"                      # batch 1 (users 1-16)
    new[34] = '{"user_id": 3}\n'              # batch 3 (users 33-40)
    write_lines(run, new)
    code, _, err = attack(cnn_dir, run, "--repair")
    assert code == 0, err
    assert "dropped 2 bad line(s) (line 2, 35)" in err and "kept 38 records" in err
    now = lines(run)
    assert len(now) == N_USERS
    assert set(old[16:32]) <= set(now)        # the untouched batch kept line for line
    assert untimed(now) == untimed(old)       # the dropped users re-attacked to the same records
    assert_complete(run, run_users(demo, cnn_dir), reference=finished)


def test_torn_last_line_resumes_without_loss(run: Path, finished: Path, demo, cnn_dir) -> None:
    old = lines(run)
    write_lines(run, [*old[:21], old[21][:25]])     # killed while writing batch 2
    code, _, err = attack(cnn_dir, run, "--resume")
    assert code == 0, err
    assert untimed(lines(run)) == untimed(old)
    assert_complete(run, run_users(demo, cnn_dir), reference=finished)


def test_complete_last_line_without_newline_is_kept(run: Path, finished: Path, demo, cnn_dir) -> None:
    old = lines(run)
    write_lines(run, [*old[:-1], old[-1].rstrip("\n")])
    code, _, err = attack(cnn_dir, run, "--resume")
    assert code == 0, err
    assert lines(run) == old
    assert_complete(run, run_users(demo, cnn_dir), reference=finished)


def test_unfinished_run_resumes_to_the_same_summary(run: Path, finished: Path, demo, cnn_dir) -> None:
    write_lines(run, lines(run)[:20])
    code, _, err = attack(cnn_dir, run, "--resume")
    assert code == 0, err
    assert_complete(run, run_users(demo, cnn_dir), reference=finished)


def test_duplicated_record_refused_then_repaired(run: Path, finished: Path, demo, cnn_dir) -> None:
    old = lines(run)
    write_lines(run, [*old, old[4]])
    uid = json.loads(old[4])["user_id"]
    assert_refused(attack(cnn_dir, run, "--resume"),
                   f"{RESULTS_FILE}:{N_USERS + 1}: user \"{uid}\" is already recorded on line 5")
    code, _, err = attack(cnn_dir, run, "--repair")
    assert code == 0, err
    assert f"line {N_USERS + 1}" in err
    assert lines(run) == old
    assert_complete(run, run_users(demo, cnn_dir), reference=finished)


@pytest.mark.parametrize("who", ["stranger", "training_user", "other_test_user"])
def test_foreign_user_refused_then_repaired(run: Path, finished: Path, demo, cnn_dir, who) -> None:
    split = recorded_split(cnn_dir, demo)
    ours = set(run_users(demo, cnn_dir))
    uid = {"stranger": "intruder", "training_user": split.train.users[0].user_id,
           "other_test_user": next(u.user_id for u in split.test.users if u.user_id not in ours)}[who]
    label = demo[uid].label if uid in demo else 0
    old = lines(run)
    write_lines(run, [*old[:10], json.dumps({**_record(finished, 0), "user_id": uid,
                                             "label": label}) + "\n", *old[10:]])
    assert_refused(attack(cnn_dir, run, "--resume"),
                   f"{RESULTS_FILE}:11: user \"{uid}\" is not one of this run's {N_USERS} test users")
    code, _, err = attack(cnn_dir, run, "--repair")
    assert code == 0, err
    assert_complete(run, run_users(demo, cnn_dir), reference=finished)


def test_record_with_another_label_refused(run: Path, finished: Path, cnn_dir) -> None:
    old = lines(run)
    rec = _record(finished, 6)
    write_lines(run, [*old[:6], json.dumps({**rec, "label": 1 - rec["label"]}) + "\n", *old[7:]])
    assert_refused(attack(cnn_dir, run, "--resume"), f"{RESULTS_FILE}:7: field 'label': user")


def test_missing_results_header_refused(run: Path, cnn_dir) -> None:
    (run / META_FILE).unlink()
    assert_refused(attack(cnn_dir, run, "--resume"), f"{run / META_FILE}: missing")


@pytest.mark.parametrize("content", ["{", "[]", '{"format": "other"}'])
def test_garbage_results_header_refused(run: Path, cnn_dir, content: str) -> None:
    (run / META_FILE).write_text(content)
    assert_refused(attack(cnn_dir, run, "--resume"), f"{run / META_FILE}: not a results header")


@pytest.mark.parametrize("content", ["{not json", "[]", "\xff\xfe"])
def test_garbage_run_record_refused(run: Path, cnn_dir, content: str) -> None:
    (run / RUN_FILE).write_text(content, encoding="latin-1")
    assert_refused(attack(cnn_dir, run, "--resume"), f"{run / RUN_FILE}: not a run record")


def test_results_without_run_record_refused(run: Path, cnn_dir) -> None:
    (run / RUN_FILE).unlink()
    assert_refused(attack(cnn_dir, run), f"{run / RESULTS_FILE}: records with no run.json")


def test_results_file_not_regular_refused(run: Path, cnn_dir) -> None:
    (run / RESULTS_FILE).unlink()
    (run / RESULTS_FILE).mkdir()
    assert_refused(attack(cnn_dir, run, "--resume"), f"{run / RESULTS_FILE}: not a regular file")


def test_attack_out_is_a_file(cnn_dir, tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.write_text("keep me")
    assert_refused(attack(cnn_dir, out), f"{out}: exists and is not a folder")
    assert out.read_text() == "keep me"


def test_negative_max_users_refused(cnn_dir, tmp_path: Path) -> None:
    assert_refused(attack(cnn_dir, tmp_path / "run", users=-5), "max users must be >= 0")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def tfidf_dir(tmp_path: Path) -> Path:
    out = tmp_path / "tfidf"
    out.mkdir()                     # an existing empty folder is no model to protect
    code, _, err = invoke("train", demo_data(), "-d", "tfidf-lr", "-o", out, "--no-progress")
    assert code == 0, err
    return out


def test_detector_retrained_into_the_same_folder_is_refused(tfidf_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, err = attack(tfidf_dir, run, "--mode", "label", users=12)
    assert code == 0, err
    write_lines(run, lines(run)[:6])        # killed half way
    before = (run / RESULTS_FILE).read_bytes()
    retrain = ("train", demo_data(), "-d", "tfidf-lr", "-o", tfidf_dir, "-p", "C=0.5",
               "--no-progress")
    assert_refused(invoke(*retrain), f"{tfidf_dir} already exists", "--overwrite")
    code, _, err = invoke(*retrain, "--overwrite")
    assert code == 0, err
    assert_refused(attack(tfidf_dir, run, "--mode", "label", "--resume", users=12),
                   f"cannot resume {run}: the detector is not the model that scored the 6 records")
    assert_refused(attack(tfidf_dir, run, "--mode", "label", "--repair", users=12), "retrained?")
    assert (run / RESULTS_FILE).read_bytes() == before


# ---- split.json and manifest.json of a model folder ---------------------------------
@pytest.fixture
def model_copy(cnn_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(cnn_dir, copy)
    return copy


def _split(cnn_dir: Path) -> dict:
    return json.loads((cnn_dir / SPLIT_FILE).read_text())


SPLITS = [
    ("not_json", lambda s: "{oops", "not valid JSON"),
    ("a_list", lambda s: [], "not a JSON object"),
    ("no_test_ids", lambda s: {k: v for k, v in s.items() if k != "test_ids"}, "test_ids: missing"),
    ("ids_a_string", lambda s: {**s, "test_ids": "u1"}, "test_ids: must be a list of user ids"),
    ("ids_numbers", lambda s: {**s, "train_ids": [1, 2]}, "train_ids: must be a list of user ids"),
    ("empty_test", lambda s: {**s, "test_ids": []}, "test_ids: empty"),
    ("unknown_id", lambda s: {**s, "test_ids": [*s["test_ids"], "nobody"]},
     "test_ids: names 1 user(s) absent from this dataset (first: 'nobody')"),
    ("overlap", lambda s: {**s, "test_ids": s["test_ids"] + s["train_ids"]},
     "test_ids: 400 ids are also in train_ids"),
    ("all_train_as_test", lambda s: {**s, "test_ids": s["train_ids"] + s["test_ids"],
                                     "train_ids": s["train_ids"][:1]}, "test_ids: 1 id is also in train_ids"),
    ("listed_twice", lambda s: {**s, "test_ids": s["test_ids"] + s["test_ids"][:1]},
     "test_ids: user 'demo-000001' is listed twice"),
    ("seed_text", lambda s: {**s, "seed": "abc"}, "seed: must be a whole number"),
    ("test_size_5", lambda s: {**s, "test_size": 5}, "test_size: must be a number between 0 and 1"),
]


@pytest.mark.parametrize("make, problem", [c[1:] for c in SPLITS], ids=[c[0] for c in SPLITS])
def test_garbage_split_refused_by_evaluate(model_copy: Path, cnn_dir: Path, make, problem) -> None:
    new = make(_split(cnn_dir))
    (model_copy / SPLIT_FILE).write_text(new if isinstance(new, str) else json.dumps(new))
    assert_refused(invoke("evaluate", model_copy, demo_data(), "--json"),
                   f"{model_copy / SPLIT_FILE}: {problem}")


def test_garbage_split_refused_by_attack(model_copy: Path, tmp_path: Path) -> None:
    (model_copy / SPLIT_FILE).write_text(json.dumps({"train_ids": [], "test_ids": []}))
    assert_refused(attack(model_copy, tmp_path / "run"), f"{model_copy / SPLIT_FILE}: train_ids: empty")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("what", ["split_missing", "split_a_folder", "manifest_garbage",
                                  "manifest_without_data"])
def test_damaged_split_record_refused(model_copy: Path, what: str) -> None:
    split, manifest = model_copy / SPLIT_FILE, model_copy / MANIFEST_FILE
    if what == "split_missing":
        split.unlink()
        culprit = f"{split}: missing"
    elif what == "split_a_folder":
        split.unlink()
        split.mkdir()
        culprit = f"{split}: not a regular file"
    elif what == "manifest_garbage":
        manifest.write_text("[[[")
        culprit = f"{manifest}: not valid JSON"
    else:
        manifest.write_text(json.dumps({"seed": 0}))
        culprit = f"{manifest}: data.checksum: missing"
    assert_refused(invoke("evaluate", model_copy, demo_data()), culprit)


def test_evaluate_all_users_ignores_the_split(model_copy: Path) -> None:
    (model_copy / SPLIT_FILE).write_text("garbage")
    code, out, err = invoke("evaluate", model_copy, demo_data(), "--json", "--all-users")
    assert code == 0, err
    assert json.loads(out)["n_test"] == 500


# ---- advseq train -o ------------------------------------------------------------------
TRAIN = ("train", demo_data(), "-d", "tfidf-lr", "--no-progress")


def test_train_into_existing_model_folder_needs_overwrite(model_copy: Path) -> None:
    before = sorted((p.name, p.read_bytes()) for p in model_copy.iterdir())
    assert_refused(invoke(*TRAIN, "-o", model_copy), f"{model_copy} already exists", "--overwrite")
    assert sorted((p.name, p.read_bytes()) for p in model_copy.iterdir()) == before
    code, _, err = invoke(*TRAIN, "-o", model_copy, "--overwrite")
    assert code == 0, err
    names = {p.name for p in model_copy.iterdir()}
    assert "vocab.json" not in names and "ngrams.json" in names      # nothing of the cnn left
    assert json.loads((model_copy / "config.json").read_text())["detector"] == "tfidf-lr"
    assert [p.name for p in model_copy.parent.iterdir()] == [model_copy.name]   # no scratch left


@pytest.mark.parametrize("overwrite", [False, True])
def test_train_out_is_a_file(tmp_path: Path, overwrite: bool) -> None:
    out = tmp_path / "model"
    out.write_text("keep me")
    assert_refused(invoke(*TRAIN, "-o", out, *(["--overwrite"] if overwrite else [])),
                   f"{out}: exists and is not a folder")
    assert out.read_text() == "keep me"


def test_train_overwrite_never_replaces_a_folder_that_is_no_model(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_refused(invoke(*TRAIN, "-o", out, "--overwrite"), f"{out} is not a model folder")
    assert (out / "notes.txt").read_text() == "keep me"


def test_train_overwrite_never_replaces_a_foreign_config(tmp_path: Path) -> None:
    out = tmp_path / "app"
    out.mkdir()
    (out / "config.json").write_text('{"name": "my app"}')
    assert_refused(invoke(*TRAIN, "-o", out, "--overwrite"), f"{out} is not a model folder")
    assert (out / "config.json").exists()


def test_train_overwrite_never_replaces_the_current_folder(model_copy: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(model_copy)
    assert_refused(invoke(*TRAIN, "-o", ".", "--overwrite"), ". holds the current folder")
    assert (model_copy / "vocab.json").exists()


def test_train_overwrite_keeps_the_old_model_when_training_fails(model_copy: Path) -> None:
    before = sorted((p.name, p.read_bytes()) for p in model_copy.iterdir())
    assert_refused(invoke(*TRAIN, "-o", model_copy, "--overwrite", "-p", "wings=3"),
                   "wings")
    assert sorted((p.name, p.read_bytes()) for p in model_copy.iterdir()) == before
    assert [p.name for p in model_copy.parent.iterdir()] == [model_copy.name]
