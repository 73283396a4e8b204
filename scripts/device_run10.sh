#!/bin/bash
# GPU run 10 (session 26; registered in docs/models.md "After run 9" and in a pre-registration outside the repo), in two lease
# calls: `bash scripts/device_run10.sh OUT END_S 1`, then, if the lease leaves time, `... OUT END_S 2`.
#   call 1: A. four land-cover students CE+ACE+CSC, seeds 0-3, 2500 steps, trained on Dubai tiles 1-4 only
#              (--hold-val: tile 5 is each card's `val`, tile 6 its `test`);
#           B. at the same time, four LiteUNet building students from the shipped U2-Net, 3000 steps as in run 9:
#              CE+ACE+CSC and CE only, seeds 2-3 (run 9 trained seeds 0-1 of both);
#   call 2: B again with seeds 4-5.
# Every student has the same step cap; END_S (seconds after the start) is a deadline that should not bind: a card
# whose `training.steps` is under its cap stopped early and is reported as such.
# Carry: .chips/landcover.npz, .chips/buildings.npz, .chips/efficientnet-lite0.pth (scripts/device_run9.sh's header
# says how to make them). Tree + carry must stay under 64 MiB: move geoseg/weights/buildings-u2net-lite0.pt,
# geoseg/weights/*-fast.pt, geoseg/weights/*.int8.onnx and tests/ aside for the call (none is read here), put back after.
# Back in OUT: run10-PART.tgz (cards and weights) and students-PART.log.
# CPU check of the plumbing: PATH=$PWD/.venv/bin:$PATH DRY=--dry LC_STEPS=3 B_STEPS=3 bash scripts/device_run10.sh /tmp/dry10 300 1
set -u
OUT=${1:?usage: device_run10.sh OUT END_S PART}
END_S=${2:-540}
PART=${3:-1}
DRY=${DRY:-}
T0=$(date +%s)
W=${WORK:-/tmp/w10}/p$PART
mkdir -p "$W/lc" "$W/b" "$OUT"
OUT=$(cd "$OUT" && pwd)  # the tarball is written from inside $W
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 GEOSEG_PRETRAINED=${GEOSEG_PRETRAINED:-$PWD/.chips/efficientnet-lite0.pth}
P="python3 scripts/device_parallel.py"
deadline=$((T0 + END_S - 30))
case "$PART" in 1|2) ;; *) echo "PART must be 1 or 2" >&2; exit 2;; esac
if [ "$PART" = 1 ]; then
  SCHEDULE="call 1 of GPU run 10: four land-cover and four LiteUNet building students at once on one GPU, each to its step cap"
  seeds="2 3"
  for seed in 0 1 2 3; do
    name=lc-hv-ce-ace-csc-s$seed
    $P student --task landcover --losses ce+ace+csc --hold-val --teacher geoseg/weights/landcover-attresunet.json \
      --schedule "$SCHEDULE" --chips .chips --work "$W/lc/$name" --seed "$seed" --steps "${LC_STEPS:-2500}" --deadline "$deadline" \
      $DRY >"$W/lc/$name.log" 2>&1 &
  done
else
  SCHEDULE="call 2 of GPU run 10: four LiteUNet building students at once on one GPU, each to its step cap"
  seeds="4 5"
fi
for losses in ce+ace+csc ce; do
  for seed in $seeds; do
    name=b-lite0-${losses//+/-}-s$seed
    $P student --task buildings --losses "$losses" --teacher geoseg/weights/buildings-u2net.json \
      --student-arch lite0 --schedule "$SCHEDULE" --chips .chips --work "$W/b/$name" --seed "$seed" --steps "${B_STEPS:-3000}" \
      --deadline "$deadline" $DRY >"$W/b/$name.log" 2>&1 &
  done
done
wait
echo "students done at $(($(date +%s) - T0)) s"
for f in "$W"/*/*/*.json; do
  [ -f "$f" ] || { echo "no card written: see $W/*/*.log"; continue; }
  python3 -c "import json,sys; c=json.load(open(sys.argv[1])); t=c['training']; m=c['metrics']
k='miou' if c['task']=='landcover' else 'pixel_iou'
print(sys.argv[1].split('/')[-2], t['steps'], t['minutes'], {s: round(m[s][k], 4) for s in ('val','test') if s in m and k in m[s]})" "$f"
done | tee "$OUT/students-$PART.log"
tail -n 3 "$W"/*/*.log >>"$OUT/students-$PART.log"
(cd "$W" && tar czf "$OUT/run10-$PART.tgz" lc b)
echo "all done at $(($(date +%s) - T0)) s"
