"""``advseq petgen train``: train a PETGEN generator outside an attack run.

Reaches the CLI through the ``advseq.cli`` entry-point group (``petgen =
"attacks.petgen.cli:app"``); torch is imported inside the command only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advseq.cli.plugins import (
    DataArg,
    DeviceOpt,
    Goal,
    GoalOpt,
    LenientOpt,
    Placement,
    PlacementOpt,
    ProgressOpt,
    checked_device,
    console,
    load,
    parse_params,
)
from advseq.errors import ConfigError
from advseq.threat import SURROGATE_DETECTOR
from attacks.petgen.settings import check_names

app = typer.Typer(no_args_is_help=True, help="Train PETGEN generators outside an attack run.")


@app.command("train")
def train(
    data: Annotated[Path, DataArg],
    detector: Annotated[Path, typer.Option("--detector", "-d", help="Deployed detector folder (its recorded split is used).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Generator folder to write.")],
    mode: Annotated[str, typer.Option(help="white-box (train on the deployed detector) or transfer (on a surrogate).")] = "white-box",
    surrogate: Annotated[Path | None, typer.Option(help=f"transfer: surrogate model folder (default: train a {SURROGATE_DETECTOR} on the training split).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    no_gan: Annotated[bool, typer.Option("--no-gan", help="Ablation: drop the realism/style GAN term (= -p gan=false).")] = False,
    no_attack: Annotated[bool, typer.Option("--no-attack", help="Ablation: drop the detector attack term.")] = False,
    no_recency: Annotated[bool, typer.Option("--no-recency", help="Ablation: drop the recency MMD term (= MALCOM).")] = False,
    no_relevancy: Annotated[bool, typer.Option("--no-relevancy", help="Ablation: drop the relevancy MMD term.")] = False,
    no_select: Annotated[bool, typer.Option("--no-select", help="Ablation: drop best-of-k selection fine-tuning.")] = False,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="PETGEN setting key=value (see attacks.petgen.settings.PETGENSettings).")] = None,
    goal: Annotated[Goal, GoalOpt] = Goal.evasion,
    placement: Annotated[Placement, PlacementOpt] = Placement.append,
    device: Annotated[str | None, DeviceOpt] = None,
    progress: Annotated[bool | None, ProgressOpt] = None,
    lenient: Annotated[bool, LenientOpt] = False,
) -> None:
    """Train a PETGEN generator (MLE pre-training, then adversarial fine-tuning) and save it.

    Use it in attacks with `advseq attack ... -a petgen -p generator=OUT`.

    An ablation flag turns its term off; without it the term follows -p (default: on)."""
    device = checked_device(device)
    params = parse_params(param)
    check_names(params, "petgen train")
    if "seed" in params:
        raise ConfigError("petgen train: set the seed with --seed, not -p seed")
    ablations = {"gan": no_gan, "attack": no_attack, "recency": no_recency,
                 "relevancy": no_relevancy, "select": no_select}
    params.update({term: False for term, off in ablations.items() if off}, seed=seed)

    from advseq.attack import AttackSpec
    from advseq.detector import load_detector
    from advseq.device import on_device
    from advseq.evaluation import prepare_surrogate
    from advseq.manifest import build_manifest, write_json
    from advseq.threat import ThreatModel
    from advseq.training import data_record, recorded_split
    from attacks.petgen.model import PETGEN

    params = on_device(PETGEN, params, device)
    deployed = load_detector(detector, device=device)   # a folder that holds no detector is named first
    ds = load(data, lenient=lenient)
    split = recorded_split(detector, ds)
    if split is None:
        raise ConfigError(f"{data} is not the dataset {detector} was trained on")
    if mode == "white-box":
        threat = ThreatModel(deployed, "white-box")
    elif mode == "transfer":
        sur, _ = prepare_surrogate(split.train, surrogate=surrogate, seed=seed, out=out,
                                   progress=progress, device=device)
        threat = ThreatModel(sur, sur.capabilities, surrogate=True)
    else:
        raise ConfigError("--mode must be white-box or transfer")
    spec = AttackSpec(goal=goal.value, placement=placement.value)
    model = PETGEN(**params).fit(split.train, threat, spec, progress=progress)
    model.save(out)
    write_json(out / "manifest.json", build_manifest(
        {"mode": mode, "params": model.get_params(), "spec": spec.to_dict(),
         "detector": str(detector), "surrogate": str(surrogate) if surrogate else None},
        seed=seed, data=data_record(ds), fit_info=model.fit_info_))
    console.print(f"trained in {model.fit_info_.get('train_seconds')}s; generator in {out}", highlight=False)
