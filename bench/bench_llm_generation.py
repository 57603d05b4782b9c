"""Generation speed of the ``llm`` attack's backbone: new tokens per second when the
candidates of many users are sampled in one batched, cached pass, against the same
number of candidates sampled one prompt and one candidate per pass (each pass encodes its
prompt again and decodes with a KV cache, as a plain ``generate`` call per candidate does).

Usage: ``python bench/bench_llm_generation.py [DATA] [--users N] [--candidates K]
[--threads T] [--max-new-tokens M] [--device cpu|cuda]``; prints one JSON object (the
seconds, tokens and tokens/s of both ways, and the setting). The prompts are the attack's
own first-round prompts for the first N malicious users of DATA (default: the demo data).
"""

from __future__ import annotations

import argparse
import json
import time

from advseq.attack import AttackSpec
from advseq.io import load_dataset
from advseq.paths import demo_data
from attacks.llm.backbone import Backbone
from attacks.llm.prompt import messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(demo_data()))
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-single", action="store_true", help="only the batched pass")
    args = ap.parse_args()

    ds = load_dataset(args.data)
    spec = AttackSpec()
    tasks = [spec.task(u) for u in ds if u.label == 1][:args.users]
    bb = Backbone(device=args.device, threads=args.threads, batch_rows=args.users * args.candidates).load()
    prompts = [bb.chat_ids(messages(t, recent=4, relevant=2)) for t in tasks]
    seeds = list(range(len(prompts)))
    kw = {"max_new_tokens": args.max_new_tokens, "temperature": 0.9, "top_p": 0.9}

    t0 = time.perf_counter()
    batched = bb.sample(prompts, seeds, n=args.candidates, **kw)
    t_batched = time.perf_counter() - t0
    tok_batched = sum(len(s.ids) for row in batched for s in row)
    out = {"users": len(prompts), "candidates": args.candidates, "threads": args.threads,
           "device": args.device, "max_new_tokens": args.max_new_tokens,
           "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1),
           "batched": {"seconds": round(t_batched, 2), "new_tokens": tok_batched,
                       "tokens_per_s": round(tok_batched / t_batched, 2)}}
    if not args.skip_single:
        single = Backbone(device=args.device, threads=args.threads, batch_rows=1).load()
        t0 = time.perf_counter()
        tokens = 0
        for p, sd in zip(prompts, seeds, strict=True):    # one prompt, one candidate a pass
            for j in range(args.candidates):
                tokens += len(single.sample([p], [sd * 1000 + j], n=1, **kw)[0][0].ids)
        t_single = time.perf_counter() - t0
        out["one_at_a_time"] = {"seconds": round(t_single, 2), "new_tokens": tokens,
                                "tokens_per_s": round(tokens / t_single, 2)}
        out["speed_up"] = round(out["batched"]["tokens_per_s"] / out["one_at_a_time"]["tokens_per_s"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
