"""``advseq train`` and ``advseq evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from advseq.cli._common import (
    DataArg,
    DeviceOpt,
    LenientOpt,
    ProgressOpt,
    checked_device,
    console,
    load,
    parse_params,
    print_json,
)


def metrics_table(title: str, m: dict[str, Any]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("precision", "recall", "F1", "accuracy", "ROC-AUC", "PR-AUC", "confusion tn fp / fn tp", "n"):
        t.add_column(col, justify="right")

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    t.add_row(f(m["precision"]), f(m["recall"]), f(m["f1"]), f(m["accuracy"]), f(m["roc_auc"]),
              f(m["pr_auc"]), "{} {} / {} {}".format(*m["confusion"][0], *m["confusion"][1]),
              str(m.get("n_test", m["n"])))
    return t


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        data: Annotated[Path, DataArg],
        detector: Annotated[str, typer.Option("--detector", "-d", help="Detector name (see `advseq list detectors`).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write (refused if it exists, unless --overwrite).")],
        seed: Annotated[int, typer.Option(help="Training seed (weights, batches, validation carve).")] = 0,
        epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
        device: Annotated[str | None, DeviceOpt] = None,
        test_size: Annotated[float, typer.Option(help="Share of users held out for the test split.")] = 0.2,
        split_seed: Annotated[int, typer.Option(help="Seed of the stratified train/test split (PETGEN: 0).")] = 0,
        param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Detector hyper-parameter key=value (repeatable), e.g. -p emb_dim=128.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model folder OUT whole (nothing of the old model is kept).")] = False,
        progress: Annotated[bool | None, ProgressOpt] = None,
        lenient: Annotated[bool, LenientOpt] = False,
    ) -> None:
        """Train a detector on the training split of DATA and score every test user.

        Writes the model (config.json, model.safetensors, vocab.json), metrics.json,
        split.json (the exact user ids, reused by attacks) and manifest.json to OUT."""
        from advseq import registry
        from advseq.device import on_device
        from advseq.training import train_detector

        device = checked_device(device)
        params = parse_params(param)
        if epochs is not None:
            params["epochs"] = epochs
        params = on_device(registry.detectors.get(detector), params, device)
        ds = load(data, lenient=lenient)
        m = train_detector(ds, detector, out, seed=seed, params=params, test_size=test_size,
                           split_seed=split_seed, progress=progress, overwrite=overwrite)
        console.print(metrics_table(f"{detector} on {ds.name} (test split, seed {seed})", m))
        console.print(f"trained in {m['train_seconds']:.1f}s ({m['epochs']} epochs, "
                      f"{m['train_users_per_second']} users/s); model in {out}", highlight=False)

    @app.command()
    def evaluate(
        model: Annotated[Path, typer.Argument(help="A model folder written by `advseq train`.", show_default=False)],
        data: Annotated[Path, DataArg],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        all_users: Annotated[bool, typer.Option("--all-users", help="Score every user even if DATA is the training dataset.")] = False,
        lenient: Annotated[bool, LenientOpt] = False,
    ) -> None:
        """Score a saved detector on DATA: its recorded test split when DATA is the dataset it was trained on, otherwise every user (a held-out dataset)."""
        from advseq.training import evaluate_saved

        ds = load(data, lenient=lenient)
        m = evaluate_saved(model, ds, all_users=all_users)
        if as_json:
            print_json(m)
        else:
            console.print(metrics_table(f"{m['detector']} on {ds.name} ({m['evaluated_on']})", m))
