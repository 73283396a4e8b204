"""Third GPU job: every model of the product retrained in one 9-minute lease, runs side by side.

Small models leave most of an H200 idle, so the runs are separate processes sharing the GPU
(and its 16 CPU cores for the superpixels). Model selection uses validation areas only; the
test areas (Kampala, Dubai tile 6) are scored once per shipped candidate, after selection.

    python3 scripts/device_parallel.py run --chips .chips --out $OUT --budget-s 540
    .venv/bin/python scripts/device_parallel.py run --chips .chips --out /tmp/dry --dry   # CPU dry run

The fourth job, buildings only (``run_buildings``: teachers on 512 px chips without Zanzibar-2),
and how its files become model folders at home:
    python3 scripts/device_parallel.py run-buildings --chips .chips --out $OUT --budget-s 480
    .venv/bin/python scripts/device_parallel.py unpack --out FILES_AT --work /tmp/run4

Schedule (seconds from the start, for --budget-s 540; scaled for others):
  0    buildings U2-Net: B-ft fine-tunes the shipped teacher, B-new trains from scratch (270 s each);
       land cover AttResUNet recipes L-base / L-strong on tiles 1-4, validated on tile 5 (150 s each);
       superpixel parts of every Dubai chip on the CPU cores; the shipped teacher's validation score.
  ~160 the land-cover recipe with the best *final* tile-5 mIoU is refitted on tiles 1-5 (150 s, last
       weights kept: no validation area is left, so the recipe and length were chosen on tile 5 first).
  ~285 the buildings teacher with the best Nairobi-2 binary mIoU (the run-2 one included) is tested on
       Kampala; its students CE / CE+ACE / CE+ACE+CSC train side by side (same step cap, same deadline).
  ~320 tile 6 tests the land-cover teacher; its three students start; the cross-tile GCN is refitted on
       its features (leave-one-tile-out CV over tiles 1-5 picks the fusion weight).
  end  GPU forward speed of every head, alone on the GPU.

Run 3 followed this schedule (its land-cover teacher and students ship; its building teacher
did not: docs/models.md). Only its GCN slot ran out of time (killed during the final fit, after
the five CV folds), so the 256 px GCN came from a second call (the shipped 128 px one was then
fitted on the CPU, `refit_gcn --pixels-per-segment 128`):
    python3 scripts/device_parallel.py parts --chips .chips --work /tmp/p --workers 14
    python3 scripts/device_parallel.py gcn --chips .chips --work $OUT/gcn --cnn LANDCOVER_CARD --cache /tmp/p --workers 14

Everything lands in --out as it finishes (at most 8 files: the device tool's limit):
buildings.pt, landcover.pt, gcn.pt, students.pt, cards.json, log.txt. A run that fails is logged
and the others go on.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from geoseg.augment import AugmentConfig  # noqa: E402

SCRIPT = Path(__file__).resolve()
COMMAND = "python3 scripts/device_parallel.py run --chips .chips --out $OUT --budget-s {budget:g}"
LANDCOVER_RECIPES = {
    # name: (lr, weight decay, augmentation overrides)
    "L-base": (2e-3, 1e-2, {}),
    "L-strong": (1e-3, 5e-2, {"channel_shuffle_p": 0.3, "grey_p": 0.15, "brightness": 0.35, "contrast": 0.35}),
}
# name: (init, lr, crop side, largest crop side or None, batch size)
BUILDING_RUNS = {"B-ft": ("shipped", 1e-3, 256, None, 32), "B-new": (None, 2e-3, 256, None, 32)}
# run 4 (`run-buildings`): from scratch on 512 px chips cut without Zanzibar-2 in training; T-mix sees
# 256-512 px crops so that it stops feeling a window's edge deep inside predict's 512-1024 px windows
BUILDING_RUNS_4 = {"T-256": (None, 2e-3, 256, None, 32), "T-mix": (None, 2e-3, 256, 512, 16)}
STUDENT_LOSSES = ("ce", "ce+ace", "ce+ace+csc")
# the students' input, when not distill's default for the task (STUDENT_INPUT): the teachers' whole
# photometric chain, or run 3's students' colour jitter alone
STUDENT_INPUTS = {"chain": AugmentConfig(), "jitter": AugmentConfig(blur_p=0, jpeg_p=0, channel_shuffle_p=0, grey_p=0)}


# ----------------------------------------------------------------- helpers ----


def log_to(path: Path):
    t0 = time.monotonic()

    def log(msg: str) -> None:
        line = f"[{time.monotonic() - t0:6.1f}s] {msg}"
        print(line, flush=True)
        with open(path, "a") as fh:
            fh.write(line + "\n")

    return log


def dump(obj: Any, path: Path) -> None:
    """Write ``obj`` as strict JSON, making its folder: a worker run by hand (``eval-teacher --work
    NEW``) has no orchestrator to make it, and lost its result at the end (session 16)."""
    from geoseg.card import write_card

    path.parent.mkdir(parents=True, exist_ok=True)
    write_card(obj, path)


def load_pack(chips: Path, task: str, dry: bool, pack: str | None = None) -> dict:
    """``chips/<pack or task>.npz`` (dry runs: the first 3 chips of each split)."""
    from geoseg.training.data import first_per_split, load_packed

    data = load_packed(chips / f"{pack or task}.npz")
    return first_per_split(data, 3) if dry else data


def with_val_as_train(data: dict) -> dict:
    """The same chips with the validation area moved into training (final refit of a chosen recipe)."""
    out = dict(data)
    out["split"] = np.where(data["split"] == "val", "train", data["split"])
    return out


def train_cfg(args, seconds: float | None = None, steps: int | None = None, lr: float = 2e-3, wd: float = 1e-2,
              aug: dict | None = None, val_every_s: float = 20.0, crop: int = 256, crop_max: int | None = None,
              batch: int = 32):
    """Training settings; dry runs shrink crops 4x and batches to 2."""
    from geoseg.training.loop import TrainConfig

    if args.dry:
        crop, crop_max = crop // 4, crop_max and crop_max // 4
    return TrainConfig(
        budget_s=seconds, steps=steps, batch_size=2 if args.dry else batch, lr=lr, weight_decay=wd, device=args.device,
        val_every_s=1e9 if args.dry else val_every_s, eval_batch=4 if args.dry else 32,
        augment=AugmentConfig(out_size=crop, out_size_max=crop_max, **(aug or {})),
    )


def run_command(args) -> str:
    """The command line of the run a worker belongs to (``run``, or ``run-buildings`` on another pack)."""
    if args.pack and args.pack != (args.task or "buildings"):
        return COMMAND.replace(" run ", " run-buildings ").format(budget=args.budget_s) + f" --pack {args.pack}"
    return COMMAND.format(budget=args.budget_s)


def shipped_card(name: str) -> Path:
    from geoseg.paths import weights_dir

    return weights_dir() / f"{name}.json"


# ----------------------------------------------------------------- workers ----


def work_teacher_buildings(args) -> None:
    from geoseg.card import load_model, save_model
    from geoseg.training.loop import train_buildings

    init, lr, crop, crop_max, batch = {**BUILDING_RUNS, **BUILDING_RUNS_4}[args.recipe or args.name]
    data = load_pack(args.chips, "buildings", args.dry and not args.train_blocks, args.pack)
    splits = None
    if args.train_blocks:  # run 5: chips re-split by city or block (training.data.resplit)
        from geoseg.training.data import first_per_split, resplit

        train, val = set(args.train_blocks.split(",")), set(args.val_blocks.split(","))
        data = resplit(data, train, val)
        data = first_per_split(data, 3) if args.dry else data
        splits = {"train": " + ".join(sorted(train)), "val": " + ".join(sorted(val)), "test": "kampala"}
    state = norm = None
    if init == "shipped":
        model, shipped = load_model(shipped_card("buildings-u2net"))
        state = {k: v.float() for k, v in model.state_dict().items()}
        norm = shipped["normalisation"]
    cfg = train_cfg(args, seconds=args.seconds, lr=lr, crop=crop, crop_max=crop_max, batch=batch)
    cfg = replace(cfg, seed=args.seed, keep=args.keep, cudnn_benchmark=args.cudnn_benchmark == "on")
    model, card = train_buildings(data, cfg, log=lambda m: print(m, flush=True), init_state=state, norm=norm,
                                  splits=splits)
    card["training"]["run"] = args.name
    card["training"]["data"] = f".chips/{args.pack or 'buildings'}.npz"
    card["training"]["init"] = "shipped buildings-u2net (GPU run 2, 1779 steps)" if init else f"random (seed {args.seed})"
    save_model(model, card, args.work)


def work_teacher_landcover(args) -> None:
    from geoseg.card import save_model
    from geoseg.training.loop import train_landcover

    lr, wd, aug = LANDCOVER_RECIPES[args.recipe]
    data = load_pack(args.chips, "landcover", args.dry)
    if args.final:
        data = with_val_as_train(data)
    cfg = train_cfg(args, seconds=args.seconds, lr=lr, wd=wd, aug=aug, val_every_s=1e9 if args.final else 15.0)
    model, card = train_landcover(data, cfg, log=lambda m: print(m, flush=True))
    card["training"]["recipe"] = {"name": args.recipe, "lr": lr, "weight_decay": wd, "augment_overrides": aug}
    if args.final:
        card["training"]["splits"] = {"train": "Dubai tiles 1-5", "val": "none: recipe and length chosen on tile 5 first",
                                      "test": "Dubai tile 6"}
        card["training"]["selection"] = "last weights (no validation area left)"
        card["metrics"] = {}
    save_model(model, card, args.work)


def work_eval_teacher(args) -> None:
    """Scores of one teacher card on one split: buildings binary mIoU + pixel IoU, land cover mIoU (+boundary F)."""
    from geoseg.card import load_model
    from geoseg.training.data import select
    from geoseg.training.loop import evaluate_buildings, evaluate_landcover

    model, card = load_model(args.card, device=args.device)
    data = select(load_pack(args.chips, card["task"], args.dry, args.pack), args.split)
    norm = card["normalisation"]
    if card["task"] == "buildings":
        scores = evaluate_buildings(model, data, norm, args.device, 4 if args.dry else 32)
    else:
        scores = evaluate_landcover(model, data, norm, args.device, 4 if args.dry else 32, boundary=args.split == "test")
    dump(scores, args.work / f"eval_{args.split}.json")


def work_student(args) -> None:
    """One distillation variant; the three variants of a task run at once, same step cap and deadline."""
    from geoseg.card import load_model, save_model
    from geoseg.training.chip_batches import ChipArrays, split_packed
    from geoseg.training.chip_scores import evaluate
    from geoseg.training.distill import PRETRAINED_CREDIT, distill, new_student, student_card
    from geoseg.training.teacher_maps import cache_teacher

    teacher, tcard = load_model(args.teacher, device=args.device)
    data = load_pack(args.chips, args.task, args.dry, args.pack)
    teacher_saw_val = "tiles 1-5" in str(tcard["training"].get("splits", {}).get("train", ""))
    if args.train_on_val or (args.task == "landcover" and teacher_saw_val and not args.hold_val):
        data = with_val_as_train(data)  # the teacher's chips, or a chosen recipe refitted on every labelled area
    splits = split_packed(data)
    train: ChipArrays = splits["train"]
    cache = None
    t0 = time.monotonic()
    if args.losses != "ce":
        cache = cache_teacher(teacher, tcard, train, args.device, batch_size=4 if args.dry else 32)
    cache_s = time.monotonic() - t0
    del teacher
    seconds = max(args.deadline - time.time(), 5.0)
    torch.manual_seed(args.seed)  # the student's initial weights follow --seed too
    student = new_student(args.task, tcard, args.student_arch)  # lite0: ImageNet weights from $GEOSEG_PRETRAINED
    run = distill(student, None, tcard, args.task, train, args.losses, args.device, seconds=seconds,
                  max_steps=args.steps, batch_size=2 if args.dry else 32, seed=args.seed, cache=cache,
                  augment=STUDENT_INPUTS.get(args.student_input))
    metrics = {s: evaluate(student, tcard, args.task, splits[s], args.device, 4 if args.dry else 32)
               for s in ("val", "test") if s in splits}
    metrics["command"] = (f"python3 scripts/device_parallel.py student --task {args.task} --losses {args.losses} "
                          f"--teacher {args.teacher} --student-arch {args.student_arch} --seed {args.seed} "
                          f"--steps {args.steps}" + (" --hold-val" if args.hold_val else "")
                          + (" --train-on-val" if args.train_on_val else ""))
    training = {"data": f".chips/{args.pack or args.task}.npz", "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                "steps": run.steps, "step_cap": args.steps, "minutes": round(run.seconds / 60, 2),
                "batch_size": 2 if args.dry else 32, "first_loss": round(run.first_loss, 4),
                "last_loss": round(run.last_loss, 4), "teacher_cache_seconds": round(cache_s, 1),
                "splits": {s: len(c) for s, c in splits.items()},
                "schedule": args.schedule,
                "student_input": args.student_input or f"{args.task} default", "student_arch": args.student_arch}
    if args.student_arch == "lite0":  # its encoder started from ImageNet weights: say so and credit them
        training["pretrained"] = PRETRAINED_CREDIT
    card = student_card(tcard, student, args.losses, training, metrics)
    card["name"] = f"{tcard['name']}-fast-{args.losses.replace('+', '-')}" + ("-lite0" if args.student_arch == "lite0" else "")
    save_model(student, card, args.work)


def work_parts(args) -> None:
    from geoseg.superpixels import GraphParams
    from geoseg.training.graphs import cached_parts

    data = load_pack(args.chips, "landcover", args.dry)
    t0 = time.monotonic()
    cached_parts(data["images"], data["labels"], GraphParams(), args.work, str((args.chips / "landcover.npz").resolve()),
                 workers=args.workers)
    print(f"parts of {len(data['images'])} chips in {time.monotonic() - t0:.1f}s", flush=True)


def work_gcn(args) -> None:
    from geoseg.training.refit_gcn import cross_tile

    chips = args.chips / "landcover.npz"
    if args.dry:  # the dry run's pack subset must be the one the parts cache was keyed on
        raise SystemExit("gcn: skipped in dry runs (needs the whole pack)")
    cross_tile(chips, args.cnn, args.work, args.cache, device=args.device, log=lambda m: print(m, flush=True),
               workers=args.workers)


def work_speed(args) -> None:
    """Forward Mpx/s of every head alone on the GPU: bf16, 512 px tiles, batch 16 (the model part only)."""
    from geoseg.card import load_model
    from geoseg.training.chip_scores import throughput_mpx_s

    out = {}
    for card in args.cards:
        model, c = load_model(card, device=args.device)
        size, batches = (64, (1, 2)) if args.dry else (512, (1, 16))
        out[c["name"]] = {b: throughput_mpx_s(model, args.device, size=size, batch=b, seconds=0.2 if args.dry else 2.0)
                          for b in batches}
        print(c["name"], out[c["name"]], flush=True)
        del model
    dump({"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "precision": "bf16 autocast",
          "tile": 512, "mpx_s_by_batch": out}, args.work / "speed.json")


WORKERS = {
    "teacher-buildings": work_teacher_buildings, "teacher-landcover": work_teacher_landcover,
    "eval-teacher": work_eval_teacher, "student": work_student, "parts": work_parts, "gcn": work_gcn,
    "speed": work_speed,
}


# ------------------------------------------------------------ orchestrator ----


class Job:
    """Spawns workers as processes of this script; each logs into ``work/<name>.log``. Keeps the
    run's ``cards.json`` in ``--out``: the cards that come back and a ``report`` entry."""

    def __init__(self, args, command: str, **fields: Any) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        args.work.mkdir(parents=True, exist_ok=True)
        self.args, self.log = args, log_to(args.out / "log.txt")
        self.t0 = time.monotonic()
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}
        gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        self.report: dict[str, Any] = {"command": command, "budget_s": args.budget_s, **fields, "device": args.device,
                                       "gpu": gpu}
        self.cards: dict[str, Any] = {"report": self.report}
        named = "".join(f"{k} {v}, " for k, v in fields.items())
        self.log(f"device {gpu}, torch {torch.__version__}, budget {args.budget_s:.0f}s, {named}dry={args.dry}")

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        dump(self.cards, self.args.out / "cards.json")

    def at(self, fraction: float) -> float:
        return self.t0 + fraction * self.args.budget_s

    def start(self, name: str, worker: str, *extra: str) -> Path:
        work = self.args.work / name
        work.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(SCRIPT), worker, "--chips", str(self.args.chips), "--work", str(work),
               "--device", self.args.device, "--budget-s", str(self.args.budget_s), *(["--dry"] if self.args.dry else []),
               *extra]
        fh = open(self.args.work / f"{name}.log", "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
        self.procs[name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), work)
        self.log(f"start {name}: {worker} {' '.join(extra)}")
        return work

    def wait(self, name: str, until: float | None = None) -> bool:
        proc, _ = self.procs[name]
        try:
            timeout = None if until is None else max(until - time.monotonic(), 0.1)
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            self.log(f"{name}: killed at its deadline")
        tail = (self.args.work / f"{name}.log").read_text().strip().splitlines()[-3:]
        self.log(f"{name}: exit {rc}; " + " | ".join(tail))
        return rc == 0

    def collect_students(self, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Cards and state dicts of the task's students that finish by 98.5 % of the budget."""
        students: dict[str, Any] = {}
        states: dict[str, Any] = {}
        for losses in STUDENT_LOSSES:
            name = f"S-{task}-{losses}"
            if self.wait(name, until=self.at(0.985)) and self.card(name):
                card_path = self.card(name)
                card = json.loads(card_path.read_text())
                students[f"{task}:{losses}"] = card
                states[f"{task}:{losses}"] = torch.load(card_path.parent / card["weights"], weights_only=True)
        return students, states

    def finish(self, speed_cards: list[str]) -> None:
        """The forward speed of ``speed_cards`` alone on the GPU; stragglers killed; the logs' tails kept."""
        self.start("speed", "speed", "--cards", *speed_cards)
        speed = self.args.work / "speed" / "speed.json"
        if self.wait("speed", until=self.t0 + self.args.budget_s + 20) and speed.is_file():
            self.report["gpu_speed"] = json.loads(speed.read_text())
        for name, (proc, _) in self.procs.items():
            if proc.poll() is None:
                proc.kill()
                self.log(f"{name}: killed at the end")
        self.keep_logs()

    def keep_logs(self, chars: int = 3000) -> None:
        """The tail of every worker's log into the report (the logs stay on the device machine)."""
        self.report["logs"] = {p.stem: p.read_text()[-chars:] for p in sorted(self.args.work.glob("*.log"))}

    def card(self, name: str) -> Path | None:
        cards = sorted(p for p in (self.args.work / name).glob("*.json") if not p.name.startswith(("eval_", "speed")))
        return cards[0] if cards else None


def best_val(card_path: Path) -> float:
    """The buildings teacher's selection score: its best Nairobi-2 binary mIoU during training."""
    return float(json.loads(card_path.read_text())["metrics"]["val"]["binary_miou"])


def final_val(card_path: Path) -> float:
    hist = json.loads(card_path.read_text())["training"]["history"]
    return float(hist[-1]["val"]) if hist else -1.0


def run(args) -> int:
    b = args.budget_s
    job = Job(args, COMMAND.format(budget=b))
    log, report, cards, save = job.log, job.report, job.cards, job.save

    def ship(task: str, card_path: Path, out_name: str) -> None:
        card = json.loads(card_path.read_text())
        shutil.copy(card_path.parent / card["weights"], args.out / out_name)
        cards[task] = card
        save()

    teach_b, teach_l = (5.0, 5.0) if args.dry else (0.5 * b, 0.28 * b)  # dry: 2 CPU cores start 8 processes
    for name in BUILDING_RUNS:
        job.start(name, "teacher-buildings", "--name", name, "--seconds", f"{teach_b:.0f}")
    for recipe in LANDCOVER_RECIPES:
        job.start(recipe, "teacher-landcover", "--recipe", recipe, "--seconds", f"{teach_l:.0f}")
    job.start("parts", "parts", "--workers", "2" if args.dry else "10")
    job.start("B-shipped", "eval-teacher", "--card", str(shipped_card("buildings-u2net")), "--split", "val")

    # -- land cover: recipe on tile 5, then the final fit on tiles 1-5
    lc_val = {}
    for recipe in LANDCOVER_RECIPES:
        if job.wait(recipe, until=job.at(0.36)) and job.card(recipe):
            lc_val[recipe] = final_val(job.card(recipe))
    report["landcover_recipe_final_val_miou"] = lc_val
    lc_teacher = None
    if lc_val:
        recipe = max(lc_val, key=lc_val.get)
        log(f"landcover: recipe {recipe} (final tile-5 mIoU {lc_val})")
        job.start("L-final", "teacher-landcover", "--recipe", recipe, "--seconds", f"{teach_l:.0f}", "--final")

    # -- buildings: the best teacher on Nairobi-2, the shipped one included
    b_val = {}
    if job.wait("B-shipped", until=job.at(0.2)):
        b_val["shipped"] = json.loads((args.work / "B-shipped" / "eval_val.json").read_text())["binary_miou"]
    for name in BUILDING_RUNS:
        if job.wait(name, until=job.at(0.56)) and job.card(name):
            b_val[name] = best_val(job.card(name))
    report["buildings_val_binary_miou"] = b_val
    save()
    b_teacher = shipped_card("buildings-u2net")
    if b_val:
        pick = max(b_val, key=b_val.get)
        log(f"buildings: teacher {pick} (Nairobi-2 binary mIoU {b_val})")
        report["buildings_teacher"] = pick
        if pick != "shipped":
            b_teacher = job.card(pick)
            job.start("B-test", "eval-teacher", "--card", str(b_teacher), "--split", "test")
            if job.wait("B-test", until=job.at(0.62)):
                card = json.loads(b_teacher.read_text())
                card["metrics"]["test"] = {"area": "kampala (never seen in training)",
                                           **json.loads((args.work / "B-test" / "eval_test.json").read_text())}
                card["metrics"]["command"] = COMMAND.format(budget=b)
                b_teacher.write_text(json.dumps(card, indent=2))
            ship("buildings", b_teacher, "buildings.pt")
    deadline = time.time() + (job.at(0.965) - time.monotonic())
    steps = "20" if args.dry else "4000"
    for losses in STUDENT_LOSSES:
        job.start(f"S-buildings-{losses}", "student", "--task", "buildings", "--losses", losses, "--teacher",
                  str(b_teacher), "--steps", steps, "--deadline", f"{deadline:.1f}")

    # -- land cover final teacher, its students, the GCN on its features
    if "L-final" in job.procs and job.wait("L-final", until=job.at(0.66)) and job.card("L-final"):
        lc_teacher = job.card("L-final")
        job.start("L-test", "eval-teacher", "--card", str(lc_teacher), "--split", "test")
        if job.wait("L-test", until=job.at(0.7)):
            card = json.loads(lc_teacher.read_text())
            card["metrics"] = {"test": {"area": "Dubai tile 6",
                                        **json.loads((args.work / "L-test" / "eval_test.json").read_text())},
                               "recipe_selection": {"final_tile5_miou_by_recipe": lc_val},
                               "command": COMMAND.format(budget=b)}
            lc_teacher.write_text(json.dumps(card, indent=2))
        ship("landcover", lc_teacher, "landcover.pt")
    lc_for_students = lc_teacher or shipped_card("landcover-attresunet")
    for losses in STUDENT_LOSSES:
        job.start(f"S-landcover-{losses}", "student", "--task", "landcover", "--losses", losses, "--teacher",
                  str(lc_for_students), "--steps", steps, "--deadline", f"{deadline:.1f}")
    if lc_teacher is not None and job.wait("parts", until=job.at(0.7)):
        job.start("gcn", "gcn", "--cnn", str(lc_teacher), "--cache", str(args.work / "parts"),
                  "--workers", "2" if args.dry else "10")

    # -- students, GCN, then the speed of every head alone on the GPU
    students: dict[str, Any] = {}
    states: dict[str, Any] = {}
    for task in ("buildings", "landcover"):
        done, weights = job.collect_students(task)
        students.update(done)
        states.update(weights)
        cards["students"] = students
        torch.save(states, args.out / "students.pt")
        save()
    if "gcn" in job.procs and job.wait("gcn", until=job.at(0.985)) and job.card("gcn"):
        ship("gcn", job.card("gcn"), "gcn.pt")
    speed_cards = [str(p) for p in (b_teacher, lc_for_students) if p] + [
        str(job.card(f"S-{t}-ce+ace+csc")) for t in ("buildings", "landcover") if job.card(f"S-{t}-ce+ace+csc")]
    job.finish(speed_cards)
    save()
    log(f"done; files {sorted(p.name for p in args.out.iterdir())}")
    return 0


def run_buildings(args) -> int:
    """Run 4, buildings only (docs/models.md "Next"): teachers from scratch on 512 px chips, selected
    on both validation blocks; students of the pick; the chosen rules are tuned back home.

    0     T-256 (256 px crops, the run-2/3 recipe) and T-mix (256-512 px crops) side by side, 0.5 of
          the budget each; the whole photometric chain; no Zanzibar-2 in training.
    ~0.52 the teacher with the best validation binary mIoU (Nairobi-2 + Zanzibar-2 chips) is scored
          once on Kampala; its students CE / CE+ACE / CE+ACE+CSC train side by side on whole chips.
    end   GPU forward speed of the pick and its CE+ACE+CSC student.
    Files: buildings-T-256.pt, buildings-T-mix.pt (both: the whole-scene rules are swept on the six
    validation scenes at home, where rasterio is), students.pt, cards.json, log.txt.
    """
    b = args.budget_s
    job = Job(args, run_command(args), pack=args.pack)
    log, report, cards, save = job.log, job.report, job.cards, job.save
    teach = 5.0 if args.dry else 0.5 * b
    pack = ("--pack", args.pack)
    for name in BUILDING_RUNS_4:
        job.start(name, "teacher-buildings", "--name", name, "--seconds", f"{teach:.0f}", *pack)
    b_val = {}
    for name in BUILDING_RUNS_4:
        if job.wait(name, until=job.at(0.56)) and job.card(name):
            b_val[name] = best_val(job.card(name))
            card = json.loads(job.card(name).read_text())
            shutil.copy(job.card(name).parent / card["weights"], args.out / f"buildings-{name}.pt")
            cards[f"buildings:{name}"] = card
    report["buildings_val_binary_miou"] = b_val
    save()
    if not b_val:
        log("no teacher finished; nothing to distil")
        return 1
    pick = max(b_val, key=b_val.get)
    report["buildings_teacher"] = pick
    teacher = job.card(pick)
    log(f"buildings: teacher {pick} (validation binary mIoU, both blocks: {b_val})")
    job.start("B-test", "eval-teacher", "--card", str(teacher), "--split", "test", *pack)
    deadline = time.time() + (job.at(0.965) - time.monotonic())
    for losses in STUDENT_LOSSES:
        job.start(f"S-buildings-{losses}", "student", "--task", "buildings", "--losses", losses, "--teacher",
                  str(teacher), "--steps", "20" if args.dry else "4000", "--deadline", f"{deadline:.1f}", *pack)
    if job.wait("B-test", until=job.at(0.62)):
        cards[f"buildings:{pick}"]["metrics"]["test"] = {
            "area": "kampala (never seen in training)", **json.loads((args.work / "B-test" / "eval_test.json").read_text())}
        save()
    cards["students"], states = job.collect_students("buildings")
    torch.save(states, args.out / "students.pt")
    save()
    student = job.card("S-buildings-ce+ace+csc")
    job.finish([str(teacher)] + ([str(student)] if student else []))
    save()
    log(f"done; files {sorted(p.name for p in args.out.iterdir())}")
    return 0


def unpack(args) -> int:
    """``run-buildings``' files (``--out``: cards.json and the .pt files) -> one model folder per model
    under ``--work`` (T-256, T-mix, S-ce, ...), for ``bench/accuracy.py --buildings-model DIR`` and
    ``tune_buildings cache --card``."""
    from geoseg.card import write_card

    cards = json.loads((args.out / "cards.json").read_text())
    states = torch.load(args.out / "students.pt", weights_only=True) if (args.out / "students.pt").is_file() else {}
    folders = []
    for key, card in cards.items():
        if key.startswith("buildings:"):
            name = key.split(":", 1)[1]
            dest = args.work / name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(args.out / f"buildings-{name}.pt", dest / card["weights"])
            folders.append(write_card(card, dest / f"{card['name']}.json").parent)
    for key, card in cards.get("students", {}).items():
        dest = args.work / f"S-{key.split(':', 1)[1]}"
        dest.mkdir(parents=True, exist_ok=True)
        torch.save(states[key], dest / card["weights"])
        folders.append(write_card(card, dest / f"{card['name']}.json").parent)
    print("\n".join(str(f) for f in folders))
    return 0 if folders else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "run-buildings", "unpack", *WORKERS])
    ap.add_argument("--chips", type=Path, default=Path(".chips"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-job"))
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dry", action="store_true", help="chip subsets, tiny batches (a CPU check of the plumbing)")
    ap.add_argument("--name")
    ap.add_argument("--recipe")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--final", action="store_true")
    ap.add_argument("--card", type=Path)
    ap.add_argument("--split")
    ap.add_argument("--task")
    ap.add_argument("--losses")
    ap.add_argument("--teacher", type=Path)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--deadline", type=float)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cnn", type=Path)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--cards", nargs="*", default=[])
    ap.add_argument("--pack", help="chips/<pack>.npz instead of chips/<task>.npz (run-buildings: buildings512)")
    ap.add_argument("--train-blocks", help="teacher-buildings: re-split, e.g. zanzibar or zanzibar,nairobi-1")
    ap.add_argument("--val-blocks", help="teacher-buildings: with --train-blocks, e.g. nairobi or nairobi-2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", choices=["best", "last"], default="best", help="teacher-buildings: weights returned")
    ap.add_argument("--student-input", choices=sorted(STUDENT_INPUTS),
                    help="student: photometric augmentation of its input (default: distill.STUDENT_INPUT of the task; "
                         "jitter: colour jitter only, as run 3's students)")
    ap.add_argument("--student-arch", choices=["fastsegnet", "lite0"], default="fastsegnet",
                    help="student: the shipped separable U-Net from scratch, or EfficientNet-Lite0 from ImageNet")
    ap.add_argument("--schedule", default="the three loss variants of this task trained at the same time on one GPU, "
                    "same step cap and deadline", help="student: how the run shared the GPU, for the card")
    ap.add_argument("--train-on-val", action="store_true",
                    help="student: train on the train and val chips, a final refit of a recipe chosen before: "
                         "the card has no 'val' metrics, and no validation area is left to choose its rules on")
    ap.add_argument("--hold-val", action="store_true",
                    help="student, land cover: keep tile 5 out of training (scored as the card's 'val'), so that a "
                         "student can be chosen there; by default it trains on tiles 1-5 as its teacher did")
    ap.add_argument("--cudnn-benchmark", choices=["on", "off"], default="off",
                    help="teacher-buildings: cuDNN autotuning of each crop size. Run 6 (on, H200) made 12-14 steps in "
                         "its first 50-90 s; run 8 (off, H100) made 139 in its first 20 s and ~9 a second after")
    args = ap.parse_args(argv)
    if args.train_on_val and args.hold_val:
        ap.error("--train-on-val trains on the validation chips that --hold-val keeps out: give one")
    if args.device == "cpu":
        torch.set_num_threads(1)
    else:
        torch.set_float32_matmul_precision("high")
    if args.what == "unpack":
        if args.out is None:
            ap.error("unpack needs --out (the device run's files)")
        return unpack(args)
    if args.what in ("run", "run-buildings"):
        if args.out is None:
            ap.error(f"{args.what} needs --out")
        if args.what == "run-buildings":
            args.pack = args.pack or "buildings512"
            return run_buildings(args)
        return run(args)
    try:
        WORKERS[args.what](args)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
