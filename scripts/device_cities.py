"""Fifth GPU job (buildings): choose the teacher's recipe across cities, then train it on the
shipped teacher's split. Written in session 12, after run 4's third Kampala veto
(docs/models.md, "After run 4").

Why: three teachers picked on validation blocks lost on Kampala. Picking the best checkpoint of a
noisy 21-chip curve, one seed each, compared luck as much as recipes. Here each recipe trains on one
city and is scored on the other (Zanzibar -> Nairobi and back), two seeds each, and the LAST
weights of equal-length runs are scored. The winner is then trained, as the shipped teacher was,
on Zanzibar 1+2 + Nairobi 1 with Nairobi 2 held out, for a fixed time; seed 0 is the candidate,
seed 1 says how far a seed moves it. Kampala chips are scored for both, after the choice.

    python3 scripts/device_cities.py --chips .chips --out $OUT --budget-s 540      # carry .chips/buildings512.npz
    .venv/bin/python scripts/device_cities.py --chips .chips --out /tmp/dry5 --dry --budget-s 600   # on an idle box; workers start slowly on 2 cores
    .venv/bin/python scripts/device_parallel.py unpack --out FILES_AT --work DIR    # DIR/final-s0, DIR/final-s1

Schedule (fractions of --budget-s):
  0     recipes T-256 and T-mix (scripts/device_parallel.py BUILDING_RUNS_4) x directions
        zanzibar->nairobi and nairobi->zanzibar, seed 0: 4 runs side by side, 0.17 each, last weights
  ~0.235 the same 4 with seed 1
  ~0.47 recipe score = mean final validation binary mIoU of its 4 runs; the higher wins. If a run is
        missing or made under half the median run's steps, the comparison is void and DEFAULT_RECIPE
        (the shipped teacher's) goes on: run 5 put all 8 side by side, the T-mix runs ran out of GPU
        memory and made 7-30 steps against T-256's ~510, and T-mix "won" on untrained weights.
  ~0.47 the winner on zanzibar + nairobi-1 (val nairobi-2), seeds 0 and 1, 0.38 each, last weights.
  ~0.93 Kampala chips for both finals (eval-teacher).
Files: buildings-final-s0.pt, buildings-final-s1.pt, cards.json (the finals' cards, every run's
history, the recipe scores), log.txt.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from statistics import mean, median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from device_parallel import BUILDING_RUNS_4, Job  # noqa: E402

COMMAND = "python3 scripts/device_cities.py --chips .chips --out $OUT --budget-s {budget:g}"
PACK = "buildings512"
DIRECTIONS = {"z2n": ("zanzibar", "nairobi"), "n2z": ("nairobi", "zanzibar")}
SEEDS = (0, 1)
FINAL_SPLIT = ("zanzibar,nairobi-1", "nairobi-2")  # the shipped teacher's: Nairobi-2 held out for its rules
DEFAULT_RECIPE = "T-256"  # the shipped teacher's crops, trained on when the cross-city comparison is void
MIN_STEP_SHARE = 0.5  # a run under this share of the median run's steps did not train like the others


def history(card_path: Path) -> dict[str, Any]:
    """What a run's card says of its curve: the last and the best validation score, and when."""
    t = json.loads(card_path.read_text())["training"]
    vals = [h["val"] for h in t["history"]]
    return {"final_val": vals[-1] if vals else None, "best_val": max(vals) if vals else None,
            "steps": t["steps"], "best_step": t["best_step"], "splits": t["splits"]}


def recipe_scores(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mean final validation score per recipe, over the runs (directions x seeds) that finished."""
    by_recipe: dict[str, list[float]] = {}
    for name, r in runs.items():
        if r.get("final_val") is not None:
            by_recipe.setdefault(name.split("/")[0], []).append(r["final_val"])
    return {k: round(mean(v), 4) for k, v in by_recipe.items()}


def void_reason(runs: dict[str, dict[str, Any]], expected: list[str]) -> str | None:
    """Why the recipes' scores cannot be compared, or None: a run that did not finish, or one
    that made under MIN_STEP_SHARE of the median run's steps (it shared a full GPU and barely
    trained, so its score says nothing of its recipe)."""
    missing = [k for k in expected if runs.get(k, {}).get("final_val") is None]
    if missing:
        return f"runs without a final score: {', '.join(missing)}"
    steps = {k: runs[k]["steps"] for k in expected}
    floor = MIN_STEP_SHARE * median(steps.values())
    short = [f"{k} ({n} steps)" for k, n in steps.items() if n < floor]
    return f"runs under {floor:g} steps (half the median): {', '.join(short)}" if short else None


def run_cities(args) -> int:
    b = args.budget_s
    job = Job(args, COMMAND.format(budget=b), pack=PACK)
    log, report, cards, save = job.log, job.report, job.cards, job.save
    seconds = 5.0 if args.dry else 0.38 * b
    wave_seconds = 5.0 if args.dry else 0.17 * b  # + ~20 s to start and score: done by 0.235
    common = ("--pack", PACK, "--keep", "last")
    names = {}
    runs = {}
    for wave, seed in enumerate(SEEDS):  # one seed per wave: 4 runs share the GPU's memory, not 8
        for recipe in BUILDING_RUNS_4:
            for direction, (train, val) in DIRECTIONS.items():
                name = f"{recipe}-{direction}-s{seed}"
                names[f"{recipe}/{direction}/s{seed}"] = name
                job.start(name, "teacher-buildings", "--name", name, "--recipe", recipe, "--train-blocks", train,
                          "--val-blocks", val, "--seed", str(seed), *common, "--seconds", f"{wave_seconds:.0f}")
        for key, name in names.items():
            if key not in runs and name in job.procs and job.wait(name, until=job.at(0.235 * (wave + 1))) \
                    and job.card(name):
                runs[key] = history(job.card(name))
            runs.setdefault(key, {})
    report["cross_city_runs"] = runs
    report["recipe_scores"] = scores = recipe_scores(runs)
    report["void"] = void = void_reason(runs, list(names))
    save()
    pick = DEFAULT_RECIPE if void else max(scores, key=scores.get)
    report["recipe"] = pick
    log(f"recipe {pick} ({'comparison void, ' + void if void else 'mean final cross-city binary mIoU'}: {scores})")
    for seed in SEEDS:
        job.start(f"final-s{seed}", "teacher-buildings", "--name", f"final-s{seed}", "--recipe", pick,
                  "--train-blocks", FINAL_SPLIT[0], "--val-blocks", FINAL_SPLIT[1], "--seed", str(seed), *common,
                  "--seconds", f"{seconds:.0f}")
    for seed in SEEDS:
        name = f"final-s{seed}"
        card_path = job.card(name) if job.wait(name, until=job.at(0.935)) else None
        if card_path is None:
            continue
        card = json.loads(card_path.read_text())
        shutil.copy(card_path.parent / card["weights"], args.out / f"buildings-{name}.pt")
        cards[f"buildings:{name}"] = card
        job.start(f"test-s{seed}", "eval-teacher", "--card", str(card_path), "--split", "test", "--pack", PACK)
    save()
    for seed in SEEDS:
        result = args.work / f"test-s{seed}" / "eval_test.json"
        if f"test-s{seed}" in job.procs and job.wait(f"test-s{seed}", until=job.at(0.99)) and result.is_file():
            cards[f"buildings:final-s{seed}"]["metrics"]["test"] = {
                "area": "kampala (never seen in training or selection)", **json.loads(result.read_text())}
    job.keep_logs(1500)
    save()
    log(f"done; files {sorted(p.name for p in args.out.iterdir())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=Path, default=Path(".chips"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-job5"))
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dry", action="store_true", help="chip subsets, tiny batches (a CPU check of the plumbing)")
    return run_cities(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
