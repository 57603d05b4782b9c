#!/usr/bin/env bash
# GPU check: does advseq use an NVIDIA GPU, how much faster is it, and does it give the
# CPU's evasion? On one machine, for each device (cpu, then DEVICE): train hlstm on wiki
# (`advseq train --device`), run white-box HotFlip and white-box PETGEN with
# `advseq attack --device` (the detector, PETGEN's generator and its reference LM on the
# device) on a stratified sample of test users, each device
# with its own empty ADVSEQ_HOME (both cold). Prints training users/s, attack users/s and
# posts/s side by side, and checks that every attack's evaded-user count on DEVICE is
# within one user of the CPU's (exit 1 otherwise). Sized for under 8 minutes on one GPU
# with 16 CPU cores (the CPU half is most of it).
#
#   bench/gpu_check.sh                          # wiki ($ADVSEQ_DATA/wiki or ../shared/data/wiki), cuda
#   bench/gpu_check.sh --device cuda:1 --max-users 100
#   bench/gpu_check.sh --device cpu --demo --attacks hotflip   # the script itself, quickly, no GPU
#
# Options: --device D (cuda, cuda:N, cpu; default cuda), --data PATH (users.jsonl),
# --demo (the bundled demo data, small settings), --max-users N (default 60),
# --attacks "hotflip petgen", --out DIR (default: a temporary folder, removed unless given).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE=cuda DATA="" DEMO=0 MAX_USERS=60 ATTACKS="hotflip petgen" OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --demo) DEMO=1; shift ;;
    --max-users) MAX_USERS=$2; shift 2 ;;
    --attacks) ATTACKS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda|cuda:[0-9]*) ;; *) echo "gpu_check.sh: --device $DEVICE: use cuda, cuda:N or cpu" >&2; exit 2 ;; esac
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check.sh: --device $DEVICE, but torch sees no CUDA GPU (install a CUDA build of torch, see README)" >&2; exit 2; }
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
fi
if [ "$DEMO" = 1 ]; then
  DATA=data/demo/users.jsonl
  DET_PARAMS="-p emb_dim=32 -p post_hidden=32 -p seq_hidden=16 -p epochs=2"
  PETGEN_PARAMS="-p adv_steps=2 -p rounds=1 -p candidates=4"
  HOTFLIP_PARAMS="-p max_flips=2 -p beam_width=2"
else
  if [ -z "$DATA" ]; then
    DATA=$("$PY" -c "from advseq.paths import shared_dataset; p = shared_dataset('wiki'); print(p or '')")
    [ -n "$DATA" ] || { echo "gpu_check.sh: no wiki data (set ADVSEQ_DATA or pass --data)" >&2; exit 2; }
  fi
  DET_PARAMS="" PETGEN_PARAMS="" HOTFLIP_PARAMS=""
fi
KEEP=1
if [ -z "$OUT" ]; then OUT=$(mktemp -d -t advseq-gpu-check-XXXX); KEEP=0; fi
mkdir -p "$OUT"
[ "$KEEP" = 1 ] || trap 'rm -rf "$OUT"' EXIT
DEVICES="cpu"
[ "$DEVICE" = cpu ] && DEVICES="cpu cpu-again" || DEVICES="cpu $DEVICE"

for tag in $DEVICES; do
  dev=${tag%-again}
  dir="$OUT/${tag//:/-}"
  mkdir -p "$dir"
  export ADVSEQ_HOME="$dir/home"
  echo "== $tag: train hlstm" >&2
  # shellcheck disable=SC2086
  "$PY" -m advseq train "$DATA" -d hlstm --device "$dev" --out "$dir/hlstm" --no-progress $DET_PARAMS >/dev/null
  for atk in $ATTACKS; do
    echo "== $tag: $atk (white-box)" >&2
    case "$atk" in
      petgen) extra="$PETGEN_PARAMS" ;;
      hotflip) extra="$HOTFLIP_PARAMS" ;;
      *) extra="" ;;
    esac
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$PY" -m advseq attack "$DATA" -d "$dir/hlstm" -a "$atk" --mode white-box --out "$dir/$atk" \
      --max-users "$MAX_USERS" --device "$dev" --no-quality --no-progress $extra >/dev/null
    echo "$start $(date +%s.%N)" > "$dir/$atk/wall_seconds"
  done
done

"$PY" - "$OUT" "$DEVICES" "$ATTACKS" <<'EOF'
import json, sys
from pathlib import Path

out, devices, attacks = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
ref, other = devices
folder = {d: out / d.replace(":", "-") for d in devices}
def load(d, *parts):
    return json.loads(folder[d].joinpath(*parts).read_text())
def fmt(v):
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)
rows, bad = [], []
m = {d: load(d, "hlstm", "metrics.json") for d in devices}
rows.append(("train hlstm: users/s", *(m[d].get("train_users_per_second") for d in devices)))
rows.append(("train hlstm: F1", *(m[d].get("f1") for d in devices)))
for atk in attacks:
    s = {d: load(d, atk, "summary.json") for d in devices}
    wall = {}
    for d in devices:
        start, end = map(float, folder[d].joinpath(atk, "wall_seconds").read_text().split())
        wall[d] = end - start
    evaded = {d: round((s[d]["evasion_rate"] or 0.0) * s[d]["n_eligible"]) for d in devices}
    rows.append((f"{atk}: users/s (wall, prepare included)", *(s[d]["n_users"] / wall[d] for d in devices)))
    rows.append((f"{atk}: posts/s (attack only)", *(s[d]["posts_per_second"] for d in devices)))
    rows.append((f"{atk}: prepare s", *(s[d]["prepare_seconds"] for d in devices)))
    rows.append((f"{atk}: evaded / detected", *(f"{evaded[d]} / {s[d]['n_eligible']}" for d in devices)))
    if abs(evaded[ref] - evaded[other]) > 1:
        bad.append(f"{atk}: {evaded[other]} users evade on {other}, {evaded[ref]} on {ref}")
width = max(len(r[0]) for r in rows)
print(f"{'':{width}}  {ref:>12}  {other:>12}")
for name, a, b in rows:
    print(f"{name:{width}}  {fmt(a):>12}  {fmt(b):>12}")
if bad:
    print("FAIL: evasion differs by more than one user: " + "; ".join(bad))
    sys.exit(1)
print(f"OK: evasion on {other} within one user of {ref} for {', '.join(attacks)}")
EOF
