"""The GPU job's distillation slot: every loss set of the ablation, side by side, then export.

:func:`device_phase` trains the shipped CE+ACE+CSC student of each task and the
CE+ACE and CE-only students on equal steps, scores them with the teacher on the
TEST split and saves ``students.pt`` + ``students.json`` after every run.
``python -m geoseg.training.ablation export DEVICE_OUT WEIGHTS`` turns that bundle
into ``*-fast`` model cards; ``... table DEVICE_OUT`` prints the ablation rows.
No rasterio/typer/fastapi at import time: this module runs on the GPU machine.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.card import fp16_state_dict, save_model, write_card
from geoseg.models.students import FastSegNet, conv_macs
from geoseg.training.chip_batches import TASKS, ChipArrays, split_packed
from geoseg.training.chip_scores import evaluate, headline, throughput_mpx_s
from geoseg.training.distill import LOSS_SETS, PAPER, SHIPPED_LOSSES, distill, new_student, student_card
from geoseg.training.teacher_maps import TeacherCache, cache_teacher


def device_phase(
    packed: dict[str, dict[str, np.ndarray]],
    teachers: dict[str, tuple[nn.Module, dict]],
    out_dir: Path,
    budget_s: float,
    device: str,
    batch_size: int = 32,
    log: Callable[[str], None] = print,
    make_student: Callable[[str, dict], FastSegNet] | None = None,
    max_steps: int | None = None,
) -> None:
    """GPU-job slot: distil, evaluate and save students for every task in ``teachers``.

    The teacher runs once per training chip (:class:`TeacherCache`, at most 15 %
    of the budget per task); then the shipped CE+ACE+CSC student of every task is
    trained first (so the product exists even if time runs short), then the
    CE+ACE and CE-only ablation runs, each capped at the shipped run's step count
    (equal steps: a fair comparison) and at its share of the remaining time.
    Teachers and students are evaluated on the TEST split. ``students.pt`` and
    ``students.json`` are rewritten atomically after every run; nothing else is
    written. A failing run is logged into the report and the next one goes on.
    ``make_student(task, teacher_card)`` defaults to :func:`new_student` (tests
    pass a tiny one); ``max_steps`` caps every run (dry runs on a CPU).
    """
    make_student = make_student or new_student
    deadline = time.monotonic() + budget_s
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in TASKS if t in teachers and t in packed]
    if not tasks:
        raise ValueError(f"nothing to distil: teachers {sorted(teachers)}, packed {sorted(packed)}")
    data = {t: split_packed(packed[t]) for t in tasks}
    report: dict[str, Any] = {"method": PAPER, "device": device, "budget_s": budget_s, "tasks": {}}
    shipped: dict[str, FastSegNet] = {}
    cards: dict[str, dict[str, Any]] = {}
    caches: dict[str, TeacherCache] = {}
    steps_cap: dict[str, int] = {}
    eval_reserve = 0.05 * budget_s  # final throughput probes and saving

    for t in tasks:
        teacher, tcard = teachers[t]
        entry: dict[str, Any] = {"teacher": tcard["name"], "chips": {s: len(c) for s, c in data[t].items()}}
        report["tasks"][t] = entry
        try:
            if "test" in data[t]:
                entry["teacher_test"] = evaluate(teacher, tcard, t, data[t]["test"], device, batch_size, deadline)
            if "train" in data[t]:
                start = time.monotonic()
                caches[t] = cache_teacher(
                    teacher, tcard, data[t]["train"], device, batch_size=batch_size,
                    deadline=min(deadline - eval_reserve, start + 0.15 * budget_s),
                )
                entry["teacher_cache"] = {"chips": len(caches[t]), "seconds": round(time.monotonic() - start, 1)}
        except Exception as exc:  # noqa: BLE001 - report and go on with the other task
            entry["error"] = f"teacher: {type(exc).__name__}: {exc}"
        log(f"distill: {t} teacher {entry}")

    runs = [(t, SHIPPED_LOSSES) for t in tasks] + [(t, ls) for ls in ("ce+ace", "ce") for t in tasks]
    runs = [(t, ls) for t, ls in runs if t in caches]
    for i, (t, losses) in enumerate(runs):
        remaining = deadline - time.monotonic() - eval_reserve
        if remaining <= 1.0:
            log(f"distill: out of time before {t} {losses}")
            break
        share = remaining / (len(runs) - i) * 0.9  # 10 % of each share for its test evaluation
        teacher, tcard = teachers[t]
        entry = report["tasks"][t]
        try:
            student = make_student(t, tcard)
            train = data[t]["train"]
            if len(caches[t]) < len(train):  # every variant sees the same chips as the cache
                train = ChipArrays(train.images[: len(caches[t])], train.labels[: len(caches[t])])
            run = distill(
                student, None, tcard, t, train, losses, device,
                seconds=share, max_steps=steps_cap.get(t, max_steps), batch_size=batch_size, seed=0,
                cache=caches[t] if losses != "ce" else None,
            )
            result: dict[str, Any] = {"steps": run.steps, "seconds": round(run.seconds, 1),
                                      "first_loss": round(run.first_loss, 4), "last_loss": round(run.last_loss, 4)}
            if "test" in data[t]:
                result["test"] = evaluate(student, tcard, t, data[t]["test"], device, batch_size, deadline)
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            entry.setdefault("runs", {})[losses] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"distill: {t} {losses} failed: {exc!r}")
            continue
        entry.setdefault("runs", {})[losses] = result
        log(f"distill: {t} {losses}: {result}")
        if losses == SHIPPED_LOSSES:
            steps_cap[t] = run.steps
            shipped[t] = student
            training = {"data": "packed chips (GPU job)", "device": device, "steps": run.steps,
                        "minutes": round(run.seconds / 60, 2), "batch_size": batch_size,
                        "teacher_cached_chips": len(caches[t]),
                        "splits": {s: len(c) for s, c in data[t].items()}}
            metrics = {"test": result.get("test", {}),
                       "command": "scripts/device_train.py (geoseg.training.ablation.device_phase)"}
            cards[t] = student_card(tcard, student, losses, training, metrics)
        report["ablation"] = ablation_rows(report)
        _save_progress(out_dir, shipped, cards, report)

    caches.clear()
    for t in tasks:
        if time.monotonic() > deadline - 2:
            break
        teacher, tcard = teachers[t]
        entry = report["tasks"][t]
        try:
            # MACs scale with pixels: count on 128 px, report per 512 px tile.
            x = torch.zeros(1, 3, 128, 128, device=device)
            entry["gmac_512"] = {"teacher": round(16 * conv_macs(teacher, x) / 1e9, 2),
                                 "student": round(16 * conv_macs(make_student(t, tcard).to(device), x) / 1e9, 2)}
            if t in shipped and device.startswith("cuda") and time.monotonic() < deadline - 1.5:
                entry["mpx_s"] = {"teacher": throughput_mpx_s(teacher, device, seconds=0.5),
                                  "student": throughput_mpx_s(shipped[t], device, seconds=0.5)}
        except Exception as exc:  # noqa: BLE001
            entry["speed_error"] = f"{type(exc).__name__}: {exc}"
    report["ablation"] = ablation_rows(report)
    _save_progress(out_dir, shipped, cards, report)


def ablation_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat ablation table: one row per (task, model) with the headline test metric and steps."""
    rows = []
    for task, entry in report["tasks"].items():
        metric = "pixel_iou" if task == "buildings" else "miou"
        for losses in LOSS_SETS:
            run = entry.get("runs", {}).get(losses)
            if run is not None:
                rows.append({"task": task, "model": f"student {losses.upper()}", "metric": metric,
                             "test": headline(run.get("test", {})), "steps": run["steps"]})
        if "teacher_test" in entry:
            rows.append({"task": task, "model": f"teacher {entry['teacher']}", "metric": metric,
                         "test": headline(entry["teacher_test"]), "steps": None})
    return rows


def _save_progress(out_dir: Path, shipped: dict[str, FastSegNet], cards: dict[str, dict], report: dict) -> None:
    """Atomically rewrite ``students.pt`` (fp16 state dicts) and ``students.json`` (cards + report)."""
    if shipped:
        tmp = out_dir / "students.pt.tmp"
        torch.save({t: fp16_state_dict(m) for t, m in shipped.items()}, tmp)
        tmp.replace(out_dir / "students.pt")
    write_card({"cards": cards, "report": report}, out_dir / "students.json")


def export_students(device_out: Path, weights: Path) -> list[Path]:
    """``students.pt`` + ``students.json`` from the GPU job -> ``<name>-fast.pt/.json`` model cards."""
    device_out, weights = Path(device_out), Path(weights)
    bundle = json.loads((device_out / "students.json").read_text())
    states = torch.load(device_out / "students.pt", map_location="cpu", weights_only=True)
    written = []
    for task, card in bundle["cards"].items():
        if task not in states:
            raise ValueError(f"students.pt lacks the {task} student named in students.json")
        model = FastSegNet(**card["arch_kwargs"])
        model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in states[task].items()})
        card = dict(card)
        card.setdefault("ablation", bundle["report"]["tasks"].get(task))
        written.append(save_model(model, card, weights))
    return written


def ablation_markdown(report: dict[str, Any]) -> str:
    """The ablation as markdown table rows for docs/distillation.md (from ``students.json``)."""
    lines = ["| task | model | test metric | steps | GPU Mpx/s |", "| --- | --- | --- | --- | --- |"]
    for row in report.get("ablation", []):
        speed = report["tasks"].get(row["task"], {}).get("mpx_s", {})
        kind = "student" if row["model"].startswith("student") else "teacher"
        shipped = row["model"] == f"student {SHIPPED_LOSSES.upper()}"
        mpx = speed.get(kind) if (shipped or kind == "teacher") else None
        lines.append(
            f"| {row['task']} | {row['model']}{' (shipped)' if shipped else ''} | {row['metric']} {row['test']:.4f} "
            f"| {row['steps'] if row['steps'] is not None else '-'} | {mpx if mpx is not None else ''} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``export DEVICE_OUT_DIR WEIGHTS_DIR`` or ``table DEVICE_OUT_DIR``."""
    if len(argv) == 3 and argv[0] == "export":
        for path in export_students(Path(argv[1]), Path(argv[2])):
            print(path)
        return 0
    if len(argv) == 2 and argv[0] == "table":
        print(ablation_markdown(json.loads((Path(argv[1]) / "students.json").read_text())["report"]))
        return 0
    asked = argv in (["-h"], ["--help"])  # help is an answer (stdout, exit 0); anything else a misuse
    print(
        "usage: python -m geoseg.training.ablation export DEVICE_OUT_DIR WEIGHTS_DIR\n"
        "       python -m geoseg.training.ablation table DEVICE_OUT_DIR",
        file=sys.stdout if asked else sys.stderr,
    )
    return 0 if asked else 2


if __name__ == "__main__":  # pragma: no cover - manual tools
    sys.exit(main(sys.argv[1:]))
