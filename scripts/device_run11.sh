#!/bin/bash
# GPU run 11 (registered in session 26, docs/models.md "After run 10", committed before any lease call), one call:
#   `bash scripts/device_run11.sh $OUT 480` (timeout_s 520; run 10 ran eight students at once in 426 s)
# Four LiteUNet building students, CE+ACE+CSC from the shipped U2-Net, the recipe of the shipped fast head (GPU run 10:
# ImageNet start, the whole photometric chain, 3000 steps of batch 32), refitted on every labelled building area
# (--train-on-val: Zanzibar 1-2 and Nairobi 1-2, 366 chips; Kampala stays the test area), seeds 0-3 at once.
# At the same time, for issue 6's ablation row that the LiteUNet lacks: two CE+ACE LiteUNets on the usual split
# (run 10's recipe, seeds 0-1; val = Nairobi-2 + Zanzibar-2 chips), beside run 10's CE and CE+ACE+CSC seeds.
# END_S (seconds after the start) is a deadline that should not bind; a card under its step cap is reported as such.
# Carry: .chips/buildings.npz and .chips/efficientnet-lite0.pth (scripts/device_run9.sh's header says how to make them);
# tree (37.9 MB in session 26) + carry (19.6 MB) = 55 MiB, under the 64 MiB limit: nothing needs moving aside.
# Back in OUT (8 files at most come back): s0.pt .. s3.pt, ace0.pt, ace1.pt, cards.tgz (cards + logs), students.log.
# CPU check of the plumbing: PATH=$PWD/.venv/bin:$PATH DRY=--dry B_STEPS=2 bash scripts/device_run11.sh /tmp/dry11 300
set -u
OUT=${1:?usage: device_run11.sh OUT END_S}
END_S=${2:-480}
DRY=${DRY:-}
T0=$(date +%s)
W=${WORK:-/tmp/w11}
mkdir -p "$W" "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 GEOSEG_PRETRAINED=${GEOSEG_PRETRAINED:-$PWD/.chips/efficientnet-lite0.pth}
deadline=$((T0 + END_S - 30))
student() {  # NAME SEED LOSSES [more device_parallel.py options]: one LiteUNet from the shipped U2-Net, in the background
  local name=$1 seed=$2 losses=$3; shift 3
  python3 scripts/device_parallel.py student --task buildings --losses "$losses" "$@" \
    --teacher geoseg/weights/buildings-u2net.json --student-arch lite0 --chips .chips --work "$W/$name" \
    --schedule "GPU run 11: six LiteUNet building students at once on one GPU, each to its step cap" \
    --seed "$seed" --steps "${B_STEPS:-3000}" --deadline "$deadline" $DRY >"$W/$name.log" 2>&1 &
}
for seed in 0 1 2 3; do student "s$seed" "$seed" ce+ace+csc --train-on-val; done
for seed in 0 1; do student "ace$seed" "$seed" ce+ace; done
wait
echo "students done at $(($(date +%s) - T0)) s"
for name in s0 s1 s2 s3 ace0 ace1; do
  f=$(ls "$W/$name"/*.json 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "$name: no card written (see $W/$name.log)"; continue; }
  python3 -c "import json,sys; c=json.load(open(sys.argv[1])); t=c['training']; m=c['metrics']
print(sys.argv[2], t['steps'], 'of', t['step_cap'], t['minutes'], 'min', {s: round(m[s]['pixel_iou'], 4) for s in ('val', 'test') if s in m})" "$f" "$name"
  cp "${f%.json}.pt" "$OUT/$name.pt"
done | tee "$OUT/students.log"
tail -n 3 "$W"/*.log >>"$OUT/students.log"
(cd "$W" && tar czf "$OUT/cards.tgz" */*.json *.log)
echo "all done at $(($(date +%s) - T0)) s"
