"""``advseq data ...``: look at a dataset before trusting any score on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from advseq.cli._common import DataArg, FormatOpt, LenientOpt, console, load, print_json, styled
from advseq.errors import ConfigError, DataError

app = typer.Typer(no_args_is_help=True)


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:  # the range NumPy and scikit-learn accept
        raise ConfigError(f"--seed: must be between 0 and {2**32 - 1}, got {seed}")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_file():
        raise DataError(out, "exists and is not a regular file (give a file name such as "
                             "users.jsonl)")


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """OS errors while writing OUT (a parent is a file, no permission, disk full) as one
    located line."""
    try:
        yield
    except OSError as err:
        raise DataError(out, f"cannot write ({err.strerror or err})") from None


@app.command()
def info(
    path: Annotated[Path, DataArg],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    audit: Annotated[bool, typer.Option(help="Run the shortcut audit (cross-validated "
                                              "text-free detectors).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the audit's cross-validation folds.")] = 0,
    lenient: Annotated[bool, LenientOpt] = False,
    fmt: Annotated[str | None, FormatOpt] = None,
) -> None:
    """Summarise a dataset: users, label balance, posts and tokens per class, contexts, vocabulary, duplicate posts, and a [bold]shortcut audit[/].

    The shortcut audit cross-validates detectors that read no text (number of posts,
    post length, retweet share): what a detector gets for free on this dataset."""
    from advseq.audit import describe

    _check_seed(seed)
    ds = load(path, lenient=lenient, fmt=fmt)
    summary = describe(ds, audit=audit, seed=seed)
    if as_json:
        print_json(summary)
    else:
        render_info(summary)


def render_info(s: dict[str, Any]) -> None:
    # the name and path are user text: printed as Text, never parsed as markup
    console.print(Text.assemble((s["name"], "bold"), f"  ({s['source']})"))
    console.print(f"{s['users']} users: {s['labels']['benign']} benign / "
                  f"{s['labels']['malicious']} malicious, {s['posts']} posts; "
                  f"sha256 {s['checksum'][:16]}…")
    t = Table(title="Per class", title_justify="left")
    t.add_column("")
    t.add_column("users", justify="right")
    t.add_column("posts/user min/med/mean/max", justify="right")
    t.add_column("tokens/post min/med/mean/max", justify="right")
    t.add_column("relevancy=1", justify="right")
    for name, c in s["by_class"].items():
        p, k = c["posts_per_user"], c["tokens_per_post"]
        t.add_row(name, str(c["users"]),
                  f"{p['min']:g} / {p['median']:g} / {p['mean']:.1f} / {p['max']:g}",
                  f"{k['min']:g} / {k['median']:g} / {k['mean']:.1f} / {k['max']:g}",
                  "-" if c["relevancy_share_1"] is None else f"{c['relevancy_share_1']:.1%}")
    console.print(t)
    ctx, voc, dup = s["contexts"], s["vocabulary"], s["duplicates"]
    console.print(f"contexts: {ctx['distinct']} distinct on {ctx['posts_with_context']} posts "
                  f"({ctx['users_with_context']} users), {ctx['in_both_classes']} in both classes; "
                  f"timestamps on {s['posts_with_timestamp']} posts")
    console.print(f"vocabulary: {voc['distinct_tokens']} distinct tokens, {voc['min_freq_2']} "
                  "seen at least twice")
    console.print(f"duplicates: {dup['distinct_posts']} distinct posts, "
                  f"{dup['posts_shared_by_users']} shared by several users, "
                  f"{dup['posts_in_both_classes']} in both classes")
    if s.get("shortcut_audit"):
        a = Table(title="Shortcut audit (cross-validated, no text read)", title_justify="left")
        for col in ("shortcut", "rule", "accuracy", "F1 (malicious)"):
            a.add_column(col, justify="right" if col not in ("shortcut", "rule") else "left")
        for r in s["shortcut_audit"]:
            style = "bold red" if r["shortcut"] != "majority" and r["accuracy"] >= 0.6 else ""
            a.add_row(r["shortcut"], r["description"],
                      f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f}", f"{r['f1']:.3f}", style=style)
        console.print(a)
        worst = max((r for r in s["shortcut_audit"] if r["shortcut"] != "majority"),
                    key=lambda r: r["accuracy"])
        if worst["accuracy"] >= 0.6:
            console.print(styled("leak:", "bold red"), f"'{worst['description']}' alone is "
                          f"{worst['accuracy']:.1%} accurate; compare every detector with it.")


@app.command()
def validate(
    path: Annotated[Path, DataArg],
    lenient: Annotated[bool, LenientOpt] = False,
    fmt: Annotated[str | None, FormatOpt] = None,
) -> None:
    """Check a dataset file: exit 0 if it loads, else print the first problem (file, line, field) and exit 2."""
    ds = load(path, lenient=lenient, fmt=fmt)
    skipped = ""
    if ds.skipped and any(ds.skipped.values()):
        skipped = f" (skipped {ds.skipped['users']} users, {ds.skipped['posts']} posts)"
    console.print(f"ok: {len(ds)} users, {ds.n_posts} posts{skipped}", highlight=False)


@app.command()
def convert(
    path: Annotated[Path, DataArg],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .jsonl (advseq's format), .csv, .tsv or .parquet (long form, one row per post).")],
    lenient: Annotated[bool, LenientOpt] = False,
    fmt: Annotated[str | None, FormatOpt] = None,
) -> None:
    """Convert between formats: PETGEN pickles, JSON Lines and CSV/TSV/Parquet long form; the output format follows OUT's extension."""
    from advseq.io import save_dataset

    _check_out(out)
    ds = load(path, lenient=lenient, fmt=fmt)
    with _writing(out):
        save_dataset(ds, out)
    console.print(f"wrote {len(ds)} users, {ds.n_posts} posts to {out} "
                  f"(sha256 of content {ds.checksum()[:16]}…)", highlight=False, markup=False)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .jsonl file; a dataset card "
                                                          "README.md is written beside it.")],
    users: Annotated[int, typer.Option("--users", "-n", help="Number of users.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same file.")] = 0,
    malicious_share: Annotated[float, typer.Option(help="Share of malicious users.")] = 0.5,
    card: Annotated[bool, typer.Option(help="Write the dataset card README.md.")] = True,
) -> None:
    """Simulate a review platform with benign and malicious users; this is how [bold]data/demo[/] is made.

    Items are the contexts; benign and malicious users' posts differ in learnable,
    non-trivial ways (topic mix, promotional phrasing, style, burstiness)."""
    from advseq.io import save_jsonl
    from advseq.simulate import dataset_card
    from advseq.simulate import simulate as run_simulation

    _check_seed(seed)
    _check_out(out)
    card_path = out.parent / "README.md"
    if card:
        _check_out(card_path)
    ds = run_simulation(users, seed, malicious_share=malicious_share)
    with _writing(out):
        save_jsonl(ds, out)
    msg = f"wrote {len(ds)} users, {ds.n_posts} posts to {out}"
    if card:
        with _writing(card_path):
            card_path.write_text(dataset_card(ds, seed=seed, n_users=users), encoding="utf-8")
        msg += f" and the dataset card {card_path}"
    console.print(msg, highlight=False, markup=False)
