"""What an attack run folder holds between runs, checked before a run continues.

``results.jsonl`` holds one record per scored user, appended batch by batch;
``results.meta.json``, written before the first record, names the models that scored
them (the deployed detector's fingerprint and, in ``transfer`` mode, the surrogate's).
A run continues only from records it can trust: every line is read and checked (JSON
object, every field of the right type, a user of this run's test split, given once, and
the models unchanged). A bad line stops the run with ``FILE:LINE: problem``; with
``repair`` the bad lines are dropped from the file (and reported) and their users are
attacked again. A torn last line, what a killed writer leaves, is dropped quietly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advseq.attack import STATUSES
from advseq.detector import Detector
from advseq.errors import ConfigError, DataError
from advseq.storage import CONFIG_FILE, atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

META_FILE = "results.meta.json"
META_FORMAT = "advseq-results-meta/1"
#: files of a model folder that describe the training, not the model
_NOT_MODEL = {"metrics.json", "split.json", "manifest.json"}


@dataclass
class BadLine:
    line: int
    problem: str


@dataclass
class ResultsFile:
    """The lines of a results file, sorted into valid records and bad lines."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)   #: each record's line, newline included
    bad: list[BadLine] = field(default_factory=list)
    torn: bool = False        #: the last line is an incomplete write
    rewrite: bool = False     #: the file must be rewritten (a torn or unterminated tail)

    def keep(self) -> None:
        """Leave exactly the valid records in the file (atomically when lines go)."""
        if self.bad or self.rewrite:
            atomic_write_bytes(self.path, b"".join(self.raw))

    def refuse(self) -> DataError:
        first = self.bad[0]
        n = len(self.bad) - 1
        more = f" (and {n} more bad line{'s' if n > 1 else ''})" if n else ""
        return DataError(self.path, f"{first.problem}{more}; pass --repair to drop the bad lines "
                                    "and attack their users again", line=first.line)

    def report(self) -> str:
        lines = [str(b.line) for b in self.bad]
        shown = ", ".join(lines[:10]) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")
        return (f"{self.path}: dropped {len(self.bad)} bad line(s) (line {shown}); kept "
                f"{len(self.records)} records; the dropped users are attacked again")


def _parse(line: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(line), None
    except UnicodeDecodeError as err:
        return None, f"not valid UTF-8 ({err.reason} at byte {err.start})"
    except json.JSONDecodeError as err:
        return None, f"malformed JSON ({err.msg} at column {err.colno})"
    except RecursionError:
        return None, "malformed JSON (nested too deeply)"
    except ValueError as err:   # e.g. an integer with more digits than Python converts
        return None, f"malformed JSON ({str(err)[:80]})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _flag(v: Any) -> bool:
    return _is_int(v) and v in (0, 1)


def _prob(v: Any) -> bool:
    return _is_number(v) and 0.0 <= v <= 1.0


_FIELDS: dict[str, tuple[Any, str]] = {
    "user_id": (lambda v: isinstance(v, str), "must be a string"),
    "label": (_flag, "must be 0 or 1"),
    "targeted": (lambda v: isinstance(v, bool), "must be true or false"),
    "clean_prob": (_prob, "must be a number in [0, 1]"),
    "attacked_prob": (_prob, "must be a number in [0, 1]"),
    "clean_pred": (_flag, "must be 0 or 1"),
    "attacked_pred": (_flag, "must be 0 or 1"),
    "eligible": (lambda v: isinstance(v, bool), "must be true or false"),
    "success": (lambda v: isinstance(v, bool), "must be true or false"),
    "flipped": (lambda v: isinstance(v, bool), "must be true or false"),
    "queries": (lambda v: _is_int(v) and v >= 0, "must be a whole number >= 0"),
    "seconds": (lambda v: _is_number(v) and v >= 0, "must be a number >= 0"),
    "status": (lambda v: isinstance(v, str), "must be a string"),
    "post": (lambda v: v is None or isinstance(v, str), "must be a string or null"),
    "context": (lambda v: v is None or isinstance(v, str), "must be a string or null"),
}


def record_problem(rec: Any) -> str | None:
    """What is wrong with one parsed record, or None when it is a well-formed record."""
    if not isinstance(rec, dict):
        return f"not a JSON object (got {type(rec).__name__ if rec is not None else 'null'})"
    for key, (ok, need) in _FIELDS.items():
        if key not in rec:
            return f"field '{key}': missing"
        if not ok(rec[key]):
            return f"field '{key}': {need}, got {_short(rec[key])}"
    if "info" in rec and not isinstance(rec["info"], dict):
        return f"field 'info': must be an object, got {_short(rec['info'])}"
    if rec["targeted"]:
        if rec["status"] not in STATUSES:
            return f"field 'status': a targeted user's must be one of {', '.join(STATUSES)}"
        if rec["post"] is None and rec["status"] != "failed":
            return "field 'post': a targeted user needs the written post (None only when the attack failed)"
    elif rec["status"] != "not_targeted" or rec["post"] is not None:
        return "field 'status': a user who was not targeted has status 'not_targeted' and no post"
    return None


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


def read_results(path: Path, users: Mapping[str, int] | None = None) -> ResultsFile:
    """Read every line of ``path``. With ``users`` (this run's test users: id -> label)
    each record must be a complete one of those users, given once; without, any JSON
    object is a record. A last line without its newline that is no complete JSON value is
    a torn write; one that is, is a record that only lacks the newline."""
    res = ResultsFile(path)
    if not path.exists():
        return res
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    chunks = path.read_bytes().split(b"\n")
    tail = chunks.pop()          # b"" when the file ends with a newline
    seen: dict[str, int] = {}
    for lineno, chunk in enumerate([*chunks, tail], start=1):
        last = lineno == len(chunks) + 1
        if last and not chunk:
            break
        rec, problem = (None, "empty line") if not chunk.strip() else _parse(chunk)
        if last and problem is not None:
            res.torn = res.rewrite = True      # a killed writer's incomplete line
            break
        if problem is None and users is not None:
            problem = record_problem(rec) or _membership(rec, users, seen)
        elif problem is None and not isinstance(rec, dict):
            problem = record_problem(rec)
        if problem is not None:
            res.bad.append(BadLine(lineno, problem))
            continue
        if users is not None:
            seen[rec["user_id"]] = lineno
        res.records.append(rec)
        res.raw.append(chunk + b"\n")
        res.rewrite |= last                    # complete, but the newline is missing
    return res


def _membership(rec: dict[str, Any], users: Mapping[str, int], seen: dict[str, int]) -> str | None:
    uid = rec["user_id"]
    if uid not in users:
        return f"user {_short(uid)} is not one of this run's {len(users)} test users"
    if uid in seen:
        return f"user {_short(uid)} is already recorded on line {seen[uid]}"
    if users[uid] != rec["label"]:
        return f"field 'label': user {_short(uid)} has label {users[uid]} in the data, " \
               f"{rec['label']} here"
    return None


def load_results(path: Path, users: Mapping[str, int], *, repair: bool) -> ResultsFile:
    """The checked records of a run that continues: a bad line refuses the run unless
    ``repair`` (then the bad lines are dropped when :meth:`ResultsFile.keep` is called)."""
    res = read_results(path, users)
    if res.bad and not repair:
        raise res.refuse()
    return res


# ---- model fingerprints ----------------------------------------------------------------
def model_fingerprint(det: Detector, folder: str | Path) -> str:
    """The detector's own fingerprint (configuration and learned state) where its class
    hashes its learned state; else a hash of the model files in ``folder``."""
    if type(det)._state_arrays is not Detector._state_arrays:
        return det.fingerprint()
    h = hashlib.sha256()
    folder = Path(folder)
    for file in sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _NOT_MODEL):
        h.update(file.name.encode() + b"\0" + file.read_bytes())
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"{folder} is missing {CONFIG_FILE}")
    return h.hexdigest()[:16]


def write_meta(out: Path, models: Mapping[str, str | None]) -> None:
    """Record which models score this run's records (``{"detector": fp, "surrogate": fp}``)."""
    atomic_write_json(out / META_FILE, {"format": META_FORMAT, "models": dict(models)})


def check_meta(out: Path, models: Mapping[str, str | None], n_records: int) -> None:
    """Refuse to continue a run whose records were scored by other models than ``models``
    (a detector retrained into the same folder, another surrogate)."""
    path = out / META_FILE
    if not n_records:
        return                      # nothing to mix: the header is written afresh
    if not path.exists():
        raise ConfigError(f"{path}: missing, so nothing says which detector scored the "
                          f"{n_records} records of results.jsonl; start a new --out")
    try:
        meta = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT \
            or not isinstance(meta.get("models"), dict):
        raise ConfigError(f"{path}: not a results header written by advseq; start a new --out")
    for role, fp in models.items():
        was = meta["models"].get(role)
        if was != fp:
            raise ConfigError(f"cannot resume {out}: the {role} is not the model that scored the "
                              f"{n_records} records in results.jsonl (fingerprint {fp}, was {was}; "
                              "retrained?); start a new --out")
