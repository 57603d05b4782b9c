"""``advseq attack``: attack a trained detector's test users and score the damage."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from advseq.cli._common import (
    DataArg,
    DeployedOpt,
    DeviceOpt,
    LenientOpt,
    ProgressOpt,
    checked_device,
    console,
    load,
    parse_params,
)
from advseq.threat import SURROGATE_DETECTOR, THREAT_MODES

#: The threat modes as a CLI choice (``Mode.white_box`` is ``"white-box"``).
Mode = StrEnum("Mode", {m.replace("-", "_"): m for m in THREAT_MODES})


class Goal(StrEnum):
    evasion = "evasion"
    flip = "flip"


class Placement(StrEnum):
    append = "append"
    replace_last = "replace-last"


GoalOpt = typer.Option(help="evasion: malicious users judged benign; flip: any verdict changes (PETGEN's objective).")
PlacementOpt = typer.Option(help="append a new post, or replace-last (the PETGEN authors' protocol).")


def register(app: typer.Typer) -> None:
    @app.command()
    def attack(
        data: Annotated[Path, DataArg],
        detector: Annotated[Path, DeployedOpt],
        attack_name: Annotated[str, typer.Option("--attack", "-a", help="Attack name (see `advseq list attacks`).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: results.jsonl, summary.json, manifest.json.")],
        mode: Annotated[Mode, typer.Option(help="Threat model: white-box (gradients + scores), score or label (black-box queries), transfer (white-box on a surrogate, scored once on the deployed detector).")] = Mode.white_box,  # type: ignore[attr-defined]
        surrogate: Annotated[Path | None, typer.Option(help="transfer: the attacker's surrogate model folder (default: train one on the training split).")] = None,
        surrogate_detector: Annotated[str, typer.Option(help="transfer: detector type to train as surrogate when --surrogate is not given.")] = SURROGATE_DETECTOR,
        budget: Annotated[int | None, typer.Option(help="Query budget per user (score/label modes).")] = None,
        seed: Annotated[int, typer.Option(help="Attack seed.")] = 0,
        resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run in OUT (same settings).")] = False,
        repair: Annotated[bool, typer.Option("--repair", help="Continue the run in OUT, dropping the bad lines of its results.jsonl (corrupt, duplicated or foreign records; reported) and attacking their users again.")] = False,
        goal: Annotated[Goal, GoalOpt] = Goal.evasion,
        placement: Annotated[Placement, PlacementOpt] = Placement.append,
        context: Annotated[str | None, typer.Option(help="Target context for every user (default: each user's last-post context).")] = None,
        max_tokens: Annotated[int, typer.Option(help="Maximum tokens of a written post.")] = 30,
        posts: Annotated[int, typer.Option("--posts", help="K, the posts the attacker may write per user (1 to 64), one after the other, each a median gap of the user's posts after the last (replace-last: the first replaces the real last post). Every attack writes them one at a time with its earlier ones in the history and stops once its own check says the goal is reached (in transfer it writes all K against the surrogate); the query budget covers all K. The summary adds the evasion rate after each k and the posts needed to evade.")] = 1,
        param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Attack hyper-parameter key=value (repeatable).")] = None,
        max_users: Annotated[int | None, typer.Option(help="Attack only the first N test users (quick looks).")] = None,
        quality: Annotated[bool, typer.Option(help="Compute the text-quality metrics (BLEU, perplexity, topic and style similarity).")] = True,
        device: Annotated[str | None, DeviceOpt] = None,
        progress: Annotated[bool | None, ProgressOpt] = None,
        lenient: Annotated[bool, LenientOpt] = False,
    ) -> None:
        """Attack every test user of a trained detector and score the attack.

        Users are the detector's recorded test split; results are appended per user to
        OUT/results.jsonl (a killed run continues with --resume; a damaged results file is
        refused, or cleaned with --repair) and summarised in
        OUT/summary.json: attack success and evasion rates, detector metrics before and
        after, queries, speed and text quality next to the real posts' yardstick."""
        from advseq.attack import AttackSpec
        from advseq.evaluation import run_attack

        device = checked_device(device)
        ds = load(data, lenient=lenient)
        spec = AttackSpec(goal=goal.value, placement=placement.value, context=context, max_tokens=max_tokens,
                          posts=posts)
        s = run_attack(ds, detector, attack_name, out=out, mode=mode.value, spec=spec,
                       attack_params=parse_params(param), surrogate=surrogate,
                       surrogate_detector=surrogate_detector, budget=budget, seed=seed,
                       resume=resume, repair=repair, max_users=max_users, quality=quality, progress=progress,
                       device=device)
        table = Table(title=f"{attack_name} ({mode.value}, {goal.value}) vs {s['detector']}", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("real last posts", justify="right")

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}" if abs(x) < 1000 else f"{x:.0f}"

        table.add_row("users scored / targeted / eligible", f"{s['n_users']} / {s['n_targeted']} / {s['n_eligible']}", "")
        table.add_row("evasion rate", f(s["evasion_rate"]), "")
        if posts > 1:
            for k, rate in enumerate(s["evasion_by_k"], 1):
                table.add_row(f"  evasion after {k} post{'s' if k > 1 else ''}", f(rate), "")
            median = s["posts_to_evade_median"]
            table.add_row("median posts to reach the goal", "-" if median is None else f"{median:g}", "")
            table.add_row("eligible users not there in K posts", str(s["posts_to_evade_hist"]["none"]), "")
        table.add_row("attack success rate", f(s["attack_success_rate"]), "")
        table.add_row("F1 before -> after", f"{f(s['before']['f1'])} -> {f(s['after']['f1'])}", "")
        table.add_row("queries per user (mean)", f(s["queries_mean"]), "")
        table.add_row("posts per second", f(s["posts_per_second"]), "")
        real = (s.get("quality") or {}).get("real", {})
        for key, label in (("bleu_2", "BLEU-2 vs real last posts"), ("perplexity_judge", "perplexity (SmolLM2 judge)"),
                           ("topic_sim_context", "topic similarity to context"),
                           ("style_similarity", "style similarity to history"), ("copy_near", "near copies"),
                           ("repetitive", "repetitive posts")):
            if s.get(key) is not None:
                table.add_row(label, f(s[key]), f(real.get(key)))
        console.print(table)
        if s.get("budget_exhausted"):
            console.print(f"query budget exhausted for {s['budget_exhausted']} users", highlight=False)
        console.print(f"results in {out}/", highlight=False)
