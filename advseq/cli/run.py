"""``advseq run`` and ``advseq retrain``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
)
from advseq.cli.attack import Goal, GoalOpt, Mode, Placement, PlacementOpt


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        config: Annotated[Path, typer.Argument(help="Run config (TOML); see configs/.", show_default=False)],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<name>).")] = None,
        report: Annotated[bool, typer.Option(help="Write the report into OUT/report when done.")] = True,
        progress: Annotated[bool | None, ProgressOpt] = None,
        repair: Annotated[bool, typer.Option("--repair", help="Resume attack units whose results.jsonl has bad lines: keep every valid record, drop the bad lines (named) and attack their users again.")] = False,
        executor: Annotated[str, typer.Option("--executor", help="Who runs the units: local (one after another, here) or ray (Ray tasks; pip install 'advseq[ray]').")] = "local",
        address: Annotated[str | None, typer.Option("--address", help="With --executor ray: join the Ray cluster at auto or HOST:PORT (the run folder must be on a filesystem every node sees).")] = None,
        workers: Annotated[int | None, typer.Option("--workers", help="With --executor ray and no --address: CPUs of the local Ray started for the run (default: all).")] = None,
        device: Annotated[str | None, typer.Option("--device", help="Run every unit on this device, overriding the config's device keys: cpu, cuda, cuda:N, mps or auto. A cuda unit asks a Ray cluster for num_gpus (1 unless [resources] says otherwise).", show_default=False)] = None,
    ) -> None:
        """Run a whole matrix (datasets × detectors × attacks × modes, plus retraining loops) from a config.

        Finished units are reused (content-addressed by config, data checksum and seed),
        so a killed run continues where it stopped when started again. A unit that fails
        on Ray is listed as failed (exit code 1) once the rest of the matrix is done."""
        from advseq.api import robustness_run
        from advseq.device import check_device

        if device is not None:   # Ray: the GPUs may be on the workers, not here
            device = check_device(device, available=executor != "ray")
        result = robustness_run(config, out=out, report=report, progress=progress, console=console,
                                repair=repair, executor=executor, address=address, workers=workers,
                                device=device)
        _print_index(result["index"])
        files = result["report"]
        if files is not None:
            console.print(f"report: {files.html} (markdown: {files.markdown})", highlight=False)
        if any(u["status"] == "failed" for u in result["index"]["units"]):
            raise typer.Exit(1)

    @app.command()
    def retrain(
        data: Annotated[Path, DataArg],
        detector: Annotated[str, typer.Option("--detector", "-d", help="Detector to harden (name, see `advseq list detectors`).")],
        attack: Annotated[str, typer.Option("--attack", "-a", help="Attack used to augment and to evaluate (see `advseq list attacks`).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (rounds.json, one folder per round).")],
        rounds: Annotated[int, typer.Option(help="Retraining rounds after round 0.")] = 3,
        mode: Annotated[Mode, typer.Option(help="Threat model of the attacker.")] = Mode.white_box,
        seed: Annotated[int, typer.Option(help="Seed for training and attacks.")] = 0,
        detector_param: Annotated[list[str] | None, typer.Option("--detector-param", help="Detector hyper-parameter key=value (repeatable).")] = None,
        param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Attack hyper-parameter key=value (repeatable).")] = None,
        goal: Annotated[Goal, GoalOpt] = Goal.evasion,
        placement: Annotated[Placement, PlacementOpt] = Placement.append,
        max_users: Annotated[int | None, typer.Option(help="Evaluate on a stratified sample of N test users.")] = None,
        quality: Annotated[bool, typer.Option(help="Text-quality metrics for each round's attack.")] = False,
        posts: Annotated[int, typer.Option("--posts", help="K, the posts the attacker writes per user (1 to 64): each round's test attack reports evasion after each k.")] = 1,
        fine_tune_epochs: Annotated[int | None, typer.Option("--fine-tune-epochs", min=1, help="Warm start: each round continues the round before's detector on the augmented users for up to N epochs instead of training a new one from scratch (torch detectors).")] = None,
        initial: Annotated[Path | None, typer.Option(help="Use this detector folder (from `advseq train` with the same settings and seed) as round 0 instead of training it again.")] = None,
        device: Annotated[str | None, DeviceOpt] = None,
        progress: Annotated[bool | None, ProgressOpt] = None,
        lenient: Annotated[bool, LenientOpt] = False,
    ) -> None:
        """Adversarial retraining: attack, augment the training users with the attacks' posts, retrain, repeat.

        Each round retrains the attacker against the current detector (adaptive) and
        reports clean F1/AUC and the evasion rate on the untouched test users."""
        from advseq.attack import AttackSpec
        from advseq.retrain import retrain_loop

        device = checked_device(device)
        ds = load(data, lenient=lenient)
        res = retrain_loop(ds, detector, attack, out, rounds=rounds, mode=mode.value, seed=seed,
                           detector_params=parse_params(detector_param), attack_params=parse_params(param),
                           spec=AttackSpec(goal=goal.value, placement=placement.value, posts=posts),
                           max_users=max_users, quality=quality, initial=initial, progress=progress,
                           fine_tune_epochs=fine_tune_epochs, device=device)
        table = Table(title=f"retraining {detector} against {attack} ({mode.value})", title_justify="left")
        from advseq.report.retraining import evasion_by_k_cell

        cols = ["round", "train users", "F1", "ROC-AUC", "evasion rate", "F1 under attack"]
        cols += [f"evasion after k = 1..{posts}"] if posts > 1 else []
        for col in cols:
            table.add_column(col, justify="right")
        for r in res["rounds"]:
            table.add_row(str(r["round"]), str(r["n_train"]), f"{r['f1']:.3f}", f"{r['roc_auc']:.3f}",
                          "-" if r["evasion_rate"] is None else f"{r['evasion_rate']:.3f}",
                          f"{r['f1_after_attack']:.3f}", *([evasion_by_k_cell(r)] if posts > 1 else []))
        console.print(table)
        console.print(f"results in {out}/rounds.json", highlight=False)


def _print_index(index: dict) -> None:
    table = Table(title="units", title_justify="left")
    for col in ("unit", "status", "seconds"):
        table.add_column(col)
    for u in index["units"]:
        why = u.get("reason") or u.get("error")
        table.add_row(u["label"], u["status"] + (f" ({why})" if why else ""),
                      str(u.get("seconds", "")))
    console.print(table)
