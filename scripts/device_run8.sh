#!/bin/bash
# GPU run 8 (session 20), one lease call: `bash scripts/device_run8.sh OUT END_S`.
#   A. six land-cover students at once from the shipped teacher: CE and CE+ACE+CSC, seeds 0-2,
#      the same 2500-step cap and deadline (issue 6's "better than CE-only", run 7's design at 2500 steps);
#   B. then one building teacher alone, final-long's setting (T-mix, seed 0, last weights) with
#      cudnn.benchmark off, until END_S seconds after the start.
# Weights and cards come back in OUT: long-s0.pt/.json, teacher.log, lc-students.tgz, students.log.
# CPU check of the plumbing: DRY=--dry LC_S=120 bash scripts/device_run8.sh /tmp/dry8 400
set -u
OUT=${1:?usage: device_run8.sh OUT END_S}
END_S=${2:-540}
DRY=${DRY:-}
T0=$(date +%s)
W=${WORK:-/tmp/w8}
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
P="python3 scripts/device_parallel.py"
lc_deadline=$((T0 + ${LC_S:-290}))
for losses in ce ce+ace+csc; do
  for seed in 0 1 2; do
    name=lc-${losses//+/-}-s$seed
    $P student --task landcover --losses "$losses" --teacher geoseg/weights/landcover-attresunet.json \
      --chips .chips --work "$W/$name" --seed "$seed" --steps "${LC_STEPS:-2500}" --deadline "$lc_deadline" \
      $DRY >"$W/$name.log" 2>&1 &
  done
done
wait
echo "students done at $(($(date +%s) - T0)) s"
for f in "$W"/lc-*/*.json; do
  python3 -c "import json,sys; c=json.load(open(sys.argv[1])); t=c['training']; print(sys.argv[1].split('/')[-2], t['steps'], t['minutes'], round(c['metrics']['test']['miou'], 4))" "$f"
done | tee "$OUT/students.log"
tail -n 3 "$W"/lc-*.log >>"$OUT/students.log"
seconds=$((T0 + END_S - $(date +%s) - 45))
echo "teacher: --seconds $seconds"
$P teacher-buildings --chips .chips --work "$W/long-s0" --name long-s0 --recipe T-mix \
  --train-blocks zanzibar,nairobi-1 --val-blocks nairobi-2 --seed 0 --pack buildings512 --keep last \
  --cudnn-benchmark off --seconds "$seconds" $DRY 2>&1 | tee "$OUT/teacher.log"
cp "$W/long-s0/buildings-u2net.pt" "$OUT/long-s0.pt"
cp "$W/long-s0/buildings-u2net.json" "$OUT/long-s0.json"
(cd "$W" && tar czf "$OUT/lc-students.tgz" lc-*)
echo "all done at $(($(date +%s) - T0)) s"
