"""How PETGEN should choose among its candidates that already fool the detector.

For every targeted test user, PETGEN samples its candidates (the attack's own seeded
draws), the deployed detector scores them, and each criterion below picks one of the
candidates that reach the goal (no refinement). The picked posts are compared on BLEU-2
against the real last posts, perplexity under the SmolLM2 judge, style similarity to
the user's history and length. Writes bench/results/petgen-choice-<dataset>.md.

    python bench/bench_petgen_choice.py -d runs/wiki/models/wiki/hlstm-7ceb637e58

The generator is the one `advseq attack ... -a petgen` trains (cached under
$ADVSEQ_HOME, trained here when missing). Rows marked "reference" use an evaluator's
metric to choose and are not options for the attack: they show what the pool holds.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from advseq.attack import AttackSpec, create_attack
from advseq.detector import load_detector
from advseq.io import load_dataset
from advseq.judge import PerplexityJudge
from advseq.lm import reference_lm
from advseq.manifest import cpu_model
from advseq.paths import shared_dataset
from advseq.quality import bleu_scores, bleu_tokens, self_bleu, style_similarities, topic_models
from advseq.schema import has_context
from advseq.threat import ThreatModel
from advseq.training import recorded_split
from attacks.petgen.naturalness import Naturalness, _ranks

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", "-d", required=True, help="deployed detector folder (advseq train)")
    ap.add_argument("--dataset", default="wiki", help="a ../shared/data name or a data file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--context-boost", type=float, default=0.0,
                    help="sample the pools with PETGEN's context_boost (the generator is the same)")
    args = ap.parse_args()
    path = shared_dataset(args.dataset) or Path(args.dataset)
    if not path.exists():
        raise SystemExit(f"{args.dataset}: not found (set $ADVSEQ_DATA or give a data file)")
    t0 = time.perf_counter()
    ds = load_dataset(path)
    split = recorded_split(args.detector, ds)
    if split is None:
        raise SystemExit(f"{path} is not the dataset {args.detector} was trained on")
    threat = ThreatModel(load_detector(args.detector), "white-box")
    spec = AttackSpec()
    atk = create_attack("petgen", seed=args.seed)
    atk.prepare(split.train, threat, spec)
    m = atk.model_
    m.context_boost = args.context_boost
    natural = Naturalness(reference_lm(split.train, seed=m.seed, progress=False, **(m.lm or {})))
    tasks = [spec.task(u) for u in split.test if spec.targets(u)]
    T = m.lm_.max_post_tokens
    rngs = [atk.np_rng(t, "sample") for t in tasks]
    uniforms = torch.from_numpy(np.concatenate([r.random((m.candidates, T)) for r in rngs]))
    pools = []
    for t, posts in zip(tasks, m.sample(tasks, uniforms, m.candidates), strict=True):
        posts = list(dict.fromkeys(posts))
        p = threat.score([t.with_post(c) for c in posts])
        reach = [c for c, q in zip(posts, p, strict=True) if q < threat.threshold]
        if reach:
            pools.append((t, [posts[int(np.argmin(p))]] + reach))   # [closest, *reaching]
    judge = PerplexityJudge.shared()
    rng = np.random.default_rng(args.seed)

    def per_option(fn):
        return [fn(t, opts[1:]) for t, opts in pools]

    fluency = [-s / np.maximum(c, 1) for s, c in
               (natural.lm.token_nll(o, [t.context] * len(o)) for t, o in ((t, opts[1:]) for t, opts in pools))]
    borda = natural.scores([t for t, _ in pools], [opts[1:] for _, opts in pools])
    borda_ctx = Naturalness(natural.lm, context=True).scores([t for t, _ in pools], [opts[1:] for _, opts in pools])
    lik = per_option(lambda t, o: _generator_loglik(m, t, o))
    style = per_option(lambda t, o: style_similarities(o, [" ".join(p.text for p in t.history.posts)] * len(o)))
    judge_nll = per_option(lambda t, o: (lambda s, c: -s / np.maximum(c, 1))(*judge.token_nll(o)))
    close = [b - _ranks(f) for b, f in zip(borda, fluency, strict=True)]   # closeness ranks
    criteria = {
        "closest to the goal (PETGEN's choice before)": [opts[0] for _, opts in pools],
        "random reaching candidate": [o[int(rng.integers(len(o) - 1)) + 1] for _, o in pools],
        "generator likelihood per token": _argmax(pools, lik),
        "fluency: reference LM per token": _argmax(pools, fluency),
        "closeness: word embeddings to the user's posts": _argmax(pools, close),
        "**fluency + closeness (Borda; shipped)**": _argmax(pools, borda),
        "fluency + closeness + closeness to the context (Borda of 3)": _argmax(pools, borda_ctx),
        "2 × fluency + closeness (weighted Borda)": _argmax(pools, [b + _ranks(f) for b, f in
                                                                    zip(borda, fluency, strict=True)]),
        "reference: evaluator's style similarity": _argmax(pools, style),
        "reference: the judge itself (oracle)": _argmax(pools, judge_nll),
    }
    refs = [u.posts[-1].text for u in split.test]
    topics = topic_models(ds, seed=args.seed)
    rows = [_row("real last posts", [t.user.posts[-1].text for t, _ in pools], pools, refs, judge, topics,
                 leave_out=True)]
    rows += [_row(name, posts, pools, refs, judge, topics) for name, posts in criteria.items()]
    n_reach = np.mean([len(o) - 1 for _, o in pools])
    boost = f", context_boost {args.context_boost:g}" if args.context_boost else ""
    lines = [f"# PETGEN: choosing among candidates that reach the goal ({args.dataset}, "
             f"`{Path(args.detector).name}`{boost})", "",
             f"{len(pools)} of {len(tasks)} targeted test users have a candidate of {m.candidates} that already "
             f"evades (mean {n_reach:.1f} per user); each row picks one of those per user, so every row "
             "evades for the same users. BLEU-2 against the real last posts of the test users (the real "
             "row leaves each post's own copy out), SmolLM2 judge perplexity, character-n-gram style "
             "similarity to the user's history, words per post, LDA topic similarity to the target "
             "context (the evaluator's), self-BLEU-2 across the chosen posts (lower = more varied).", "",
             "| choice | BLEU-2 | judge ppl | style | words | topic sim context | self-BLEU-2 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r[0]} | {r[1]:.3f} | {r[2]:.0f} | {r[3]:.3f} | {r[4]:.1f} | {_fmt(r[5])} | {r[6]:.3f} |"
              for r in rows]
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} CPU ({cpu_model()}) "
              f"({torch.get_num_threads()} threads) in {time.perf_counter() - t0:.0f} s with "
              f"`python bench/bench_petgen_choice.py -d {args.detector}"
              f"{f' --context-boost {args.context_boost:g}' if args.context_boost else ''}`."]
    RESULTS.mkdir(exist_ok=True)
    suffix = f"-boost{args.context_boost:g}" if args.context_boost else ""
    out = RESULTS / f"petgen-choice-{Path(str(args.dataset)).stem}{suffix}.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def _generator_loglik(m, task, posts) -> np.ndarray:
    from attacks.petgen.generator import CondExample, task_example

    e = task_example(task)
    b = m._encoder()([CondExample(e.history, e.context, p, e.label, e.relevancy) for p in posts])
    with torch.no_grad():
        logits, tmask = m.generator_.target_logits(b.to(m.lm_.torch_device))
        tgt = b.target_ids[:, : logits.shape[1]]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return ((lp * tmask).sum(1) / tmask.sum(1).clamp(min=1)).numpy()


def _argmax(pools, values) -> list[str]:
    return [opts[1:][int(np.argmax(v))] for (_, opts), v in zip(pools, values, strict=True)]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _row(name, posts, pools, refs, judge, topics, leave_out: bool = False) -> tuple:
    ref_index = {r: i for i, r in enumerate(refs)}
    lo = [ref_index.get(p, -1) for p in posts] if leave_out else None
    bleu = bleu_scores(posts, [refs] * len(posts), (2,), leave_out=lo)[2]
    hist = [" ".join(p.text for p in t.history.posts) for t, _ in pools]
    style = style_similarities(posts, hist).mean()
    words = np.mean([len(bleu_tokens(p)) for p in posts])
    ctx = [(p, t.context) for p, (t, _) in zip(posts, pools, strict=True) if has_context(t.context)]
    topic = float(topics.similarity([p for p, _ in ctx], [c for _, c in ctx]).mean()) if ctx else None
    return (name, float(np.nanmean(bleu)), judge.perplexity(posts), float(style), float(words), topic,
            self_bleu(posts, 2))


if __name__ == "__main__":
    main()
