"""``advseq ceiling``: the best evasion any K written posts could reach against a detector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advseq.cli._common import (
    DataArg,
    DeployedOpt,
    DeviceOpt,
    LenientOpt,
    ProgressOpt,
    checked_device,
    console,
    load,
)
from advseq.cli.attack import Goal, GoalOpt, Placement, PlacementOpt


def register(app: typer.Typer) -> None:
    @app.command()
    def ceiling(
        data: Annotated[Path, DataArg],
        detector: Annotated[Path, DeployedOpt],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for ceiling.json (per-user margins and witness posts) and manifest.json (default: DETECTOR/ceiling; DETECTOR/ceiling-K for K > 1 posts).")] = None,
        posts: Annotated[int, typer.Option("--posts", help="K, the posts the attacker writes per user (1 to 64): K relaxed posts appended in a row after each user's history (with replace-last the first replaces the last post), optimised jointly.")] = 1,
        length: Annotated[int, typer.Option(help="Tokens of each relaxed post.")] = 10,
        steps: Annotated[int, typer.Option(help="Adam steps per restart.")] = 300,
        restarts: Annotated[int, typer.Option(help="Random restarts per user (the best one counts).")] = 1,
        goal: Annotated[Goal, GoalOpt] = Goal.evasion,
        placement: Annotated[Placement, PlacementOpt] = Placement.append,
        seed: Annotated[int, typer.Option(help="Seed of the random starts.")] = 0,
        max_users: Annotated[int | None, typer.Option(help="Only a seeded sample of N test users.")] = None,
        device: Annotated[str | None, DeviceOpt] = None,
        progress: Annotated[bool | None, ProgressOpt] = None,
        lenient: Annotated[bool, LenientOpt] = False,
    ) -> None:
        """Estimate the best evasion rate ANY K written posts (one by default) can reach against a detector.

        Optimises K relaxed posts (a probability distribution over the detector's own
        vocabulary at each position, which contains every text) jointly by gradient descent
        for each eligible test user. If the relaxed rate is low, no text attack that writes
        K posts can do better by searching harder. Needs a detector that reads soft tokens."""
        from advseq.attack import AttackSpec
        from advseq.ceiling import run_ceiling

        spec = AttackSpec(goal=goal.value, placement=placement.value, posts=posts)  # a bad K fails here
        device = checked_device(device)
        ds = load(data, lenient=lenient)
        out = out or Path(detector) / ("ceiling" if posts == 1 else f"ceiling-{posts}")
        res = run_ceiling(ds, detector, out, spec=spec, max_users=max_users, seed=seed, length=length,
                          steps=steps, restarts=restarts, progress=progress, device=device)
        if res["n_eligible"] == 0:
            console.print("no eligible users (the detector already gives every targeted user the goal verdict)")
            return
        written = f"{posts} written posts" if posts > 1 else "one written post"
        console.print(f"{res['n_eligible']} eligible users of {res['n_users']} ({goal.value}, {placement.value}); "
                      f"{written} of {res['length']} tokens:", highlight=False)
        console.print(f"  relaxed ceiling (any mixture of the detector's words): {res['relaxed_rate']:.3f}", highlight=False)
        console.print(f"  reached by real token posts (witnesses, scored as text): {res['token_rate']:.3f}",
                      highlight=False)
        console.print(f"  {res['seconds']:.0f} s; per-user results in {out}/ceiling.json", highlight=False)
