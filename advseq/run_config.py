"""Run configs: the TOML file (or the same tables as a dict) behind ``advseq run``, read
and checked before anything is trained.

Every wrong value gets one line naming the file, the line and the key —
``FILE:LINE: [table] key: problem`` (``[[table]] #N key`` for an array of tables; without
the line where the text gives none) — and exit code 2: a wrong type, a value out of
range, an unknown key, two tables of one kind with one name, an empty matrix, an ``out``
that is a file. Hyper-parameters in ``params`` are checked by the detector's or attack's
own rules (:mod:`advseq.config`), by constructing it.

Names are labels: a dataset, detector, attack or run name becomes a folder only through
:func:`folder_name`, a safe slug, so no name can point outside the run's folder. The
names themselves are kept, in ``index.json``, ``run.json`` and the report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from advseq.attack import MAX_POSTS
from advseq.config import (
    INT_MAX,
    Bool,
    Choice,
    Float,
    Int,
    Items,
    ParamError,
    Rule,
    Table,
    Text,
    build,
)
from advseq.errors import ConfigError
from advseq.executors import resources as res
from advseq.storage import one_line
from advseq.threat import SURROGATE_DETECTOR, THREAT_MODES, surrogate_seed
from advseq.toml_lines import MAX_CONFIG_BYTES, TomlLines, parse_toml, read_config_text  # noqa: F401

#: a name that is its own folder name; others get a slug and a hash of the name
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")

SEED_RULE = Int(0, INT_MAX)
MAX_SHARDS = 4096   #: the most tasks one attack unit is split into (``shards``)


class PostCounts(Rule):
    """The K values of a ``posts`` key: one integer in [1, MAX_POSTS] or a list of distinct
    ones (``posts = [1, 2, 4, 8]``: one attack unit per K)."""

    _K = Int(1, MAX_POSTS)

    def _problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return None if self._K.problem(value) is None else \
                self._want(f"an integer in [1, {MAX_POSTS}] or a list of them", value)
        if not 1 <= len(value) <= MAX_POSTS:
            return self._want(f"a list of 1 to {MAX_POSTS} integers", value)
        for i, v in enumerate(value):
            bad = self._K.problem(v)
            if bad:
                return f"item {i}: {bad}"
        twice = next((v for j, v in enumerate(value) if v in value[:j]), None)
        return None if twice is None else f"K = {twice} is listed twice"


def post_counts(value: Any) -> list[int]:
    """A checked ``posts`` value as a list of K values."""
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


RUN_KEYS: dict[str, Rule] = {
    "name": Text(empty=True), "out": Text(), "seed": SEED_RULE,
    "test_size": Float(0, 1, low_open=True, high_open=True), "split_seed": SEED_RULE,
    "quality": Bool(), "max_users": Int(0), "goal": Choice("evasion", "flip"),
    "placement": Choice("append", "replace-last"), "ceiling": Bool(), "ceiling_steps": Int(1, 100_000),
    "posts": PostCounts(), "shards": Int(1, MAX_SHARDS), "device": res.DEVICE_KEY,
}
DATASET_KEYS: dict[str, Rule] = {"name": Text(empty=True), "demo": Bool(), "shared": Text(),
                                 "path": Text()}
DETECTOR_KEYS: dict[str, Rule] = {"name": Text(empty=True), "detector": Text(), "params": Table(),
                                  "device": res.DEVICE_KEY}
SURROGATE_KEYS: dict[str, Rule] = {"detector": Text(), "params": Table(), "device": res.DEVICE_KEY}
ATTACK_KEYS: dict[str, Rule] = {
    "name": Text(empty=True), "attack": Text(), "params": Table(), "budget": Int(1),
    "modes": Items(Choice(*THREAT_MODES), max_len=len(THREAT_MODES)),
    "detectors": Items(Text(empty=True)), "posts": PostCounts(), "shards": Int(1, MAX_SHARDS),
    "device": res.DEVICE_KEY,
}
RETRAIN_KEYS: dict[str, Rule] = {"detector": Text(empty=True), "attack": Text(empty=True),
                                 "rounds": Int(1, 100), "mode": Choice(*THREAT_MODES), "params": Table(),
                                 "posts": Int(1, MAX_POSTS), "fine_tune_epochs": Int(1, 100_000),
                                 "device": res.DEVICE_KEY}
#: top-level tables: name -> (is an array of tables, its keys)
TABLES: dict[str, tuple[bool, dict[str, Rule]]] = {
    "run": (False, RUN_KEYS), "datasets": (True, DATASET_KEYS), "detectors": (True, DETECTOR_KEYS),
    "surrogate": (False, SURROGATE_KEYS), "attacks": (True, ATTACK_KEYS), "retrain": (True, RETRAIN_KEYS),
    "resources": (False, res.RESOURCE_KEYS),
}


def folder_name(name: str) -> str:
    """The folder a config name is written to: the name itself when it is a plain one
    (letters, digits, ``._-``, at most 64 characters, not starting with ``.`` or ``-``),
    else a slug of it plus a hash of the whole name (so two names never share a folder)."""
    if _SAFE_NAME.fullmatch(name):
        return name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:40].rstrip(".-") or "name"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}"


class Named:
    """A config table with a ``name``: its ``folder`` is where the run writes for it."""

    name: str

    @property
    def folder(self) -> str:
        return folder_name(self.name)


@dataclass
class DatasetCfg(Named):
    name: str
    path: Path


@dataclass
class DetectorCfg(Named):
    name: str
    detector: str
    params: dict[str, Any] = field(default_factory=dict)
    device: str | None = None              #: where its units run (None: the run's)


@dataclass
class AttackCfg(Named):
    name: str
    attack: str
    modes: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None
    detectors: list[str] | None = None     #: only against these [[detectors]] labels
    posts: list[int] | None = None         #: the K values to run (None: the run's)
    shards: int | None = None              #: tasks each of its units is split into (None: the run's)
    device: str | None = None              #: where its units run (None: the run's)


@dataclass
class RetrainCfg:
    detector: str
    attack: str
    rounds: int = 3
    mode: str = "white-box"
    params: dict[str, Any] = field(default_factory=dict)
    posts: int = 1                         #: K, the posts the loop's attacker writes per user
    device: str | None = None              #: where the loop runs (None: the run's)
    fine_tune_epochs: int | None = None    #: warm start: rounds continue the last detector


@dataclass
class RunConfig:
    name: str
    out: Path
    seed: int = 0
    test_size: float = 0.2
    split_seed: int = 0
    quality: bool = True
    max_users: int | None = None
    goal: str = "evasion"
    placement: str = "append"
    ceiling: bool = False
    ceiling_steps: int = 300
    posts: list[int] = field(default_factory=lambda: [1])   #: K values of every attack
    datasets: list[DatasetCfg] = field(default_factory=list)
    detectors: list[DetectorCfg] = field(default_factory=list)
    surrogate: DetectorCfg = field(default_factory=lambda: DetectorCfg("surrogate", SURROGATE_DETECTOR))
    attacks: list[AttackCfg] = field(default_factory=list)
    retrain: list[RetrainCfg] = field(default_factory=list)
    source: str | None = None
    shards: int = 1                        #: tasks each attack unit is split into (by user)
    #: ``[resources]``: run-wide ``num_cpus``/``num_gpus`` and per-kind tables of them
    resources: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"                    #: where units run unless their table says (advseq.device)

    def attack_posts(self, atk: AttackCfg) -> list[int]:
        """The K values ``atk`` runs with: its own ``posts``, else the run's."""
        return atk.posts or self.posts

    def attack_shards(self, atk: AttackCfg) -> int:
        """The shards each of ``atk``'s units is split into: its own, else the run's."""
        return atk.shards or self.shards

    def request(self, kind: str, device: str | None = None) -> dict[str, float]:
        """A ``kind`` unit's task request on ``device`` (:func:`~advseq.executors.resources.unit_request`)."""
        return res.unit_request(self.resources, kind, device)

    def device_of(self, table: Any) -> str:
        """Where the units of a [[detectors]], [surrogate], [[attacks]] or [[retrain]] table run."""
        return res.table_device(table, self.device)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (run.json, index.json); a ``posts`` at its default
        (K = 1) is left out, so one-post configs keep the record they had before K."""
        def conv(x: Any) -> Any:
            if isinstance(x, Path):
                return str(x)
            if isinstance(x, list):
                return [conv(i) for i in x]
            if hasattr(x, "__dataclass_fields__"):
                return {k: conv(getattr(x, k)) for k in x.__dataclass_fields__
                        if not (k in _QUIET_FIELDS and _at_default(x, k))}
            return x
        return conv(self)


#: left out of the config record at their defaults (older configs keep their run.json)
_QUIET_FIELDS = ("posts", "shards", "resources", "device")


def _at_default(obj: Any, name: str) -> bool:
    f = obj.__dataclass_fields__[name]
    return bool(getattr(obj, name) == (f.default if f.default_factory is MISSING else f.default_factory()))


def field_name(table: str, index: int | None, key: str | None) -> str:
    """``[table] key`` or ``[[table]] #N key``, as the user wrote the table."""
    is_array = TABLES.get(table, (False, {}))[0]
    if table not in TABLES:
        head = table
    else:
        head = f"[[{table}]] #{index + 1}" if is_array and index is not None else \
            f"[[{table}]]" if is_array else f"[{table}]"
    return f"{head} {key}" if key else head


class ConfigReader:
    """Checks the tables of one config and raises the located one-line error."""

    def __init__(self, path: str, lines: TomlLines | None) -> None:
        self.path = path
        self.lines = lines

    def where(self, table: str, index: int | None, key: str | None) -> str:
        no = self.lines.line(table, index, key.split(".") if key else ()) if self.lines else None
        return f"{self.path}:{no}" if no else self.path

    def fail(self, table: str, index: int | None, key: str | None, problem: str) -> NoReturn:
        raise ConfigError(f"{self.where(table, index, key)}: {field_name(table, index, key)}: {problem}")

    def top(self, raw: Mapping[str, Any]) -> None:
        for key, value in raw.items():
            if key not in TABLES:
                known = ", ".join(f"[[{t}]]" if a else f"[{t}]" for t, (a, _) in TABLES.items())
                self.fail(key, None, None, f"unknown table or key (a run config has {known})")
            is_array = TABLES[key][0]
            if is_array and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
                self.fail(key, None, None, f"must be [[{key}]] tables (an array of tables)")
            if not is_array and not isinstance(value, dict):
                self.fail(key, None, None, f"must be a [{key}] table")

    def table(self, raw: Mapping[str, Any], table: str, index: int | None = None) -> dict[str, Any]:
        schema = TABLES[table][1]
        for key, value in raw.items():
            rule = schema.get(key)
            if rule is None:
                self.fail(table, index, key, f"unknown key (known: {', '.join(schema)})")
            bad = rule.problem(value)
            if bad:
                self.fail(table, index, key, bad)
        return dict(raw)

    def need(self, raw: Mapping[str, Any], table: str, index: int | None, key: str) -> Any:
        if key not in raw:
            self.fail(table, index, None, f"missing key '{key}'")
        return raw[key]

    def registered(self, reg: Any, name: str, table: str, index: int | None, key: str) -> Any:
        try:
            return reg.get(name)
        except ConfigError as err:
            self.fail(table, index, key, str(err))

    def params(self, cls: Any, params: dict[str, Any], seed: int, table: str, index: int | None,
               owner: str) -> None:
        """Construct ``cls`` as the run will (with the run's seed): its rules check ``params``."""
        if "seed" in params:
            self.fail(table, index, "params.seed", "set [run] seed instead (it seeds every "
                                                   "detector and attack of the run)")
        try:
            build(cls, {"seed": seed, **params}, owner)
        except ParamError as err:
            self.fail(table, index, f"params.{err.key}", err.problem)
        except ConfigError as err:
            self.fail(table, index, "params", one_line(str(err)))

    def unique(self, table: str, names: Sequence[str], key: str = "name") -> None:
        """Refuse two tables of one kind with one name, or whose folders would coincide."""
        seen: dict[str, int] = {}
        folders: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                j = seen[name]
                self.fail(table, i, key, f"{name!r} is also the name of {field_name(table, j, None)} "
                                         f"({self.where(table, j, key)}); names must be unique")
            folder = folder_name(name)
            if folder in folders:
                j = folders[folder]
                self.fail(table, i, key, f"its folder name {folder!r} is also that of "
                                         f"{field_name(table, j, None)} ({names[j]!r}); rename one")
            seen[name], folders[folder] = i, i


def check_out_folder(out: Path, field: str) -> None:
    """Refuse a run folder that is a file or lies under one (``field`` names the option)."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"lies under {p}, a file"
                raise ConfigError(f"{field}: {out} {what}, not a folder; choose another out")
            return


def check_seed(seed: Any, field: str = "--seed") -> int:
    bad = SEED_RULE.problem(seed)
    if bad:
        raise ConfigError(f"{field}: {bad}")
    return seed


def load_config(source: str | Path | Mapping[str, Any], *,
                out: str | Path | None = None) -> RunConfig:
    """Read and check a run config — a TOML file, or the same tables as a dict (relative
    paths then resolve against the working directory); errors name the file, the line
    and the key."""
    if isinstance(source, Mapping):
        raw, path, base, lines = dict(source), Path("<config>"), Path.cwd(), None
        default_name = "run"
    else:
        path = Path(source)
        base, default_name = path.parent, path.stem
        text = read_config_text(path)
        raw, lines = parse_toml(path, text), TomlLines(text)
    r = ConfigReader(str(path), lines)
    r.top(raw)
    run = r.table(raw.get("run", {}), "run")
    name = str(run.get("name") or default_name)
    cfg = RunConfig(
        name=name, out=_out_folder(r, run, out, base, name),
        seed=int(run.get("seed", 0)), test_size=float(run.get("test_size", 0.2)),
        split_seed=int(run.get("split_seed", 0)), quality=bool(run.get("quality", True)),
        max_users=int(run["max_users"]) if run.get("max_users") else None,
        goal=str(run.get("goal", "evasion")), placement=str(run.get("placement", "append")),
        ceiling=bool(run.get("ceiling", False)), ceiling_steps=int(run.get("ceiling_steps", 300)),
        posts=post_counts(run.get("posts", 1)), shards=int(run.get("shards", 1)),
        source=None if isinstance(source, Mapping) else str(path),
        device=res.config_device(run.get("device")) or "cpu",
    )
    if "resources" in raw:
        cfg.resources = res.check_resources(r, raw["resources"])
    cfg.datasets = [_dataset(r, d, i, base) for i, d in enumerate(raw.get("datasets", []))]
    cfg.detectors = [_detector(r, d, i, cfg.seed) for i, d in enumerate(raw.get("detectors", []))]
    if "surrogate" in raw:
        s = r.table(raw["surrogate"], "surrogate")
        cfg.surrogate = DetectorCfg("surrogate", s.get("detector", SURROGATE_DETECTOR),
                                    dict(s.get("params", {})), res.check_table_device(r, "surrogate", None, s))
    _check_surrogate(r, cfg.surrogate, cfg.seed)
    cfg.attacks = [_attack(r, a, i, cfg.seed) for i, a in enumerate(raw.get("attacks", []))]
    r.unique("datasets", [d.name for d in cfg.datasets])
    r.unique("detectors", [d.name for d in cfg.detectors])
    r.unique("attacks", [a.name for a in cfg.attacks])
    labels = ", ".join(sorted(d.name for d in cfg.detectors))
    for i, a in enumerate(cfg.attacks):
        unknown = sorted(set(a.detectors or ()) - {d.name for d in cfg.detectors})
        if unknown:
            r.fail("attacks", i, "detectors", f"{unknown} are not among the [[detectors]] ({labels})")
    cfg.retrain = [_retrain(r, rt, i, cfg) for i, rt in enumerate(raw.get("retrain", []))]
    if not cfg.datasets:
        raise ConfigError(f"{path}: needs at least one [[datasets]] table")
    if not cfg.detectors:
        raise ConfigError(f"{path}: needs at least one [[detectors]] table")
    return cfg


def _out_folder(r: ConfigReader, run: dict[str, Any], out: str | Path | None, base: Path,
                name: str) -> Path:
    """The run folder: ``out`` (the --out option), else ``[run] out`` (relative to the
    config), else ``runs/<the run name's folder name>`` in the checkout."""
    from advseq.paths import REPO_DIR

    if out:
        check_out_folder(Path(out), "--out")
        return Path(out)
    if not run.get("out"):
        return REPO_DIR / "runs" / folder_name(name)
    if "\0" in run["out"]:
        r.fail("run", None, "out", "contains a NUL character")
    path = (base / run["out"]).resolve()
    try:
        check_out_folder(path, "out")
    except ConfigError as err:
        r.fail("run", None, "out", str(err).removeprefix("out: "))
    return path


def _dataset(r: ConfigReader, raw: dict[str, Any], i: int, base: Path) -> DatasetCfg:
    from advseq.paths import demo_data, shared_data_dir

    d = r.table(raw, "datasets", i)
    name = r.need(d, "datasets", i, "name")
    given = [k for k in d if k in ("demo", "shared", "path") and d[k] is not False]  # file order
    if len(given) != 1:
        r.fail("datasets", i, given[1] if len(given) > 1 else None,
               'give exactly one of demo = true, shared = "NAME" or path = "FILE"')
    if given == ["demo"]:
        return DatasetCfg(name, demo_data())
    if given == ["shared"]:
        shared = d["shared"]
        if folder_name(shared) != shared:
            r.fail("datasets", i, "shared", f"{shared!r} is not a dataset folder name")
        root = shared_data_dir()
        if root is None:
            r.fail("datasets", i, "shared",
                   f"shared dataset {shared!r} needs ../shared/data or $ADVSEQ_DATA")
        return DatasetCfg(name, root / shared / "users.jsonl")
    if "\0" in d["path"]:
        r.fail("datasets", i, "path", "contains a NUL character")
    return DatasetCfg(name, (base / d["path"]).resolve())


def _detector(r: ConfigReader, raw: dict[str, Any], i: int, seed: int) -> DetectorCfg:
    from advseq import registry

    d = r.table(raw, "detectors", i)
    label = r.need(d, "detectors", i, "name")
    if label == "surrogate":
        r.fail("detectors", i, "name",
               "'surrogate' names the [surrogate] table's detector; choose another label")
    kind = d.get("detector", label)
    cls = r.registered(registry.detectors, kind, "detectors", i,
                       "detector" if "detector" in d else "name")
    params = dict(d.get("params", {}))
    r.params(cls, params, seed, "detectors", i, kind)
    return DetectorCfg(label, kind, params, res.check_table_device(r, "detectors", i, d))


def _check_surrogate(r: ConfigReader, sur: DetectorCfg, seed: int) -> None:
    from advseq import registry

    cls = r.registered(registry.detectors, sur.detector, "surrogate", None, "detector")
    r.params(cls, sur.params, surrogate_seed(seed), "surrogate", None, sur.detector)


def _attack(r: ConfigReader, raw: dict[str, Any], i: int, seed: int) -> AttackCfg:
    from advseq import registry

    a = r.table(raw, "attacks", i)
    label = r.need(a, "attacks", i, "name")
    kind = a.get("attack", label)
    cls = r.registered(registry.attacks, kind, "attacks", i, "attack" if "attack" in a else "name")
    modes = list(a.get("modes", ["white-box"]))
    twice = next((m for j, m in enumerate(modes) if m in modes[:j]), None)
    if twice is not None:
        r.fail("attacks", i, "modes", f"mode {twice!r} is listed twice")
    params = dict(a.get("params", {}))
    r.params(cls, params, seed, "attacks", i, kind)
    return AttackCfg(label, kind, modes, params, a.get("budget"), a.get("detectors"),
                     post_counts(a["posts"]) if "posts" in a else None,
                     int(a["shards"]) if "shards" in a else None, res.check_table_device(r, "attacks", i, a))


def _retrain(r: ConfigReader, raw: dict[str, Any], i: int, cfg: RunConfig) -> RetrainCfg:
    """A retraining loop; ``attack`` is an [[attacks]] label (whose params it takes when
    it gives none) or an attack's registry name."""
    from advseq import registry

    rt = r.table(raw, "retrain", i)
    det = r.need(rt, "retrain", i, "detector")
    kinds = {d.name: d.detector for d in cfg.detectors}
    if det not in kinds:
        r.fail("retrain", i, "detector", f"{det!r} is not one of the [[detectors]] ({', '.join(sorted(kinds))})")
    if "fine_tune_epochs" in rt and not registry.detectors.get(kinds[det]).can_fine_tune:
        r.fail("retrain", i, "fine_tune_epochs", f"detector {kinds[det]!r} cannot fine-tune (it trains "
                                                 "from scratch only); leave it out")
    atk = r.need(rt, "retrain", i, "attack")
    named = next((a for a in cfg.attacks if a.name == atk), None)
    kind = named.attack if named else atk
    cls = r.registered(registry.attacks, kind, "retrain", i, "attack")
    params = dict(rt.get("params", {}))
    if named is not None and not params:
        params = named.params
    r.params(cls, params, cfg.seed, "retrain", i, kind)
    return RetrainCfg(det, kind, int(rt.get("rounds", 3)), str(rt.get("mode", "white-box")), params,
                      int(rt.get("posts", 1)), res.check_table_device(r, "retrain", i, rt), rt.get("fine_tune_epochs"))
