"""Running the segmentation heads over batches of uint8 tiles (torch, inference mode).

Why a module of its own: the pipeline should not care which runtime, device or
model family produces the per-pixel probabilities. ``TileModel`` turns a batch of
uint8 RGB tiles into float32 softmax probabilities (and, for the land-cover GCN
refinement, decoder features); ``refine_with_gcn`` re-labels one tile's
superpixels with the graph network. Models come from model cards
(``geoseg.card``); ``load_head`` picks the shipped card of a task and profile,
falling back from 'fast' to 'accurate' with a warning when no student ships.
"""
from __future__ import annotations

import atexit
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg import card as cards
from geoseg.notes import tell
from geoseg.options import RUNTIMES
from tiles.splits import file_sha256

TASKS = ("buildings", "landcover", "gcn")
#: report.json's ``profile`` of a model given with ``--model`` whose card states none
OWN_MODEL = "own model"


def ignore_tracer_warnings() -> None:
    """Ignore the ONNX export tracer's warnings about geoseg's own models.

    Exporting a head traces it, and the tracer warns of each Python branch on a tensor in our
    models (U2-Net's and ``ProbabilityHead``'s size checks: the graph keeps dynamic sizes, the
    branches hold for every input). Filtered by category and module, once, at import (below): a
    catch_warnings block around the export swapped the process-wide filters on the thread that
    runs a scene, beside others (the class-map thread, a Dask worker's other jobs).
    """
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"geoseg\.")


ignore_tracer_warnings()


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


def load_head(
    task: str, profile: str = "accurate", device: str = "cpu", model_dir: Path | None = None,
    notes: list[str] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of ``task`` from ``model_dir`` (a card or a folder of one) or the shipped weights.

    ``profile='fast'`` loads the ``*-fast`` student card when shipped; otherwise says so (into a
    run's ``notes``, else a warning: ``geoseg.notes``) and uses the accurate model. A shipped card
    gets ``profile`` set to what was actually used; a card of ``model_dir`` keeps the profile its
    card states (a distilled student's says ``fast``), else says ``own model``: ``--profile`` does
    not choose a given model, and report.json called a user's U2-Net teacher 'fast'.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if profile not in ("fast", "accurate"):
        raise ValueError(f"profile must be 'fast' or 'accurate', got {profile!r}")
    if model_dir is not None:
        path = cards.find_task_card(model_dir, task)  # before the weights are read
        module, card = cards.load_model(path, device=device, notes=notes)
        card["profile"] = card.get("profile") or OWN_MODEL
        return module, card
    path = cards.shipped_card_path(task, profile)  # the gcn's fast card was fitted on the student
    used = "fast" if path == cards.default_card_path(task, "fast") else "accurate"
    if profile == "fast" and used == "accurate" and task != "gcn":
        # (a gcn without a fast card is refused by the pipeline's feature check, not swapped silently)
        tell(notes, f"no fast student shipped for {task}: using the accurate model")
    if not path.is_file():
        raise cards.ModelCardError(f"no {task} model shipped ({path.name} missing in {path.parent})")
    module, card = cards.load_model(path, device=device, notes=notes)
    card["profile"] = used
    return module, card


class ProbabilityHead(nn.Module):
    """Raw 0..255 float tiles -> softmax probabilities (and full-size features): one graph to export."""

    def __init__(self, module: nn.Module, card: dict[str, Any], with_features: bool) -> None:
        super().__init__()
        self.module = module
        self.with_features = with_features
        norm = card["normalisation"]
        self.register_buffer("mean", torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor):
        x = (x - self.mean) / self.std
        if not self.with_features:
            logits = self.module(x)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            return torch.softmax(logits.float(), dim=1)
        if hasattr(self.module, "forward_with_features"):
            logits, feats = self.module.forward_with_features(x)
        elif hasattr(self.module, "classify"):
            feats = self.module.features(x)
            logits = self.module.classify(feats)
        else:
            raise TypeError(f"{type(self.module).__name__} exposes no features for the GCN")
        if feats.shape[-2:] != x.shape[-2:]:
            feats = F.interpolate(feats, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.softmax(logits.float(), dim=1), feats.float()


def cache_dir() -> Path:
    """Where exported ONNX graphs are kept: ``$GEOSEG_CACHE`` or ``~/.cache/geoseg``; an ``OSError``
    when neither is known (no ``HOME``, and a user id without a passwd entry: OpenShift's random ids,
    ``env -i``), which a cache that cannot be written is to ``export_onnx``."""
    if os.environ.get("GEOSEG_CACHE"):
        return Path(os.environ["GEOSEG_CACHE"])
    try:
        return Path.home() / ".cache" / "geoseg"
    except RuntimeError as exc:  # Path.home()'s "Could not determine home directory." had ended every run
        raise OSError(errno.ENOENT, "no home folder (HOME is not set, and the user id has no passwd entry)") from exc


def _model_fingerprint(card: dict[str, Any], with_features: bool) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([card.get("architecture"), card.get("arch_kwargs"), card.get("normalisation"),
                              with_features, torch.__version__], sort_keys=True).encode())
    weights = card.get("weights")
    card_path = card.get("card_path")
    if weights and card_path and (Path(card_path).parent / weights).is_file():
        digest.update((Path(card_path).parent / weights).read_bytes())
    else:
        digest.update(b"untrained-seed-0")
    return digest.hexdigest()[:16]


def export_onnx(head: nn.Module, card: dict[str, Any], with_features: bool) -> Path:
    """The head as an ONNX graph (dynamic batch and size), exported once and cached on disk.

    A cache that cannot be written (a read-only or missing home: containers, service accounts)
    costs an export per process into a private temp folder, with a warning, not the run."""
    name = f"{card.get('name', 'model')}-{_model_fingerprint(card, with_features)}.onnx"
    try:  # the folder itself in the messages (a literal ~ hid which home was meant)
        cache = str(cache_dir())
    except OSError:
        cache = "~/.cache/geoseg (no home folder)"
    try:
        return _export_into(cache_dir() / "onnx", name, head, with_features)
    except OSError as exc:
        warnings.warn(f"ONNX cache {cache} is not writable ({exc.strerror or exc}): the graph is exported "
                      "again in each process; set GEOSEG_CACHE to a writable folder to keep it", stacklevel=2)
    scratch: Path | None = None
    try:
        scratch = _process_scratch_dir()
        return _export_into(scratch, name, head, with_features)
    except OSError as exc:  # e.g. a small TMPDIR: the bare "No space left on device" named no folder
        try:
            where: Path | str = scratch or Path(tempfile.gettempdir())
        except OSError:  # none can be written at all (a read-only root file system)
            where = "no folder: none of the system temp folders can be written"
        raise OSError(exc.errno, f"{exc.strerror or exc}: exporting the model's ONNX graph into {where} (the "
                                 f"system temp folder, TMPDIR), as the cache {cache} could not take it; set "
                                 "GEOSEG_CACHE (or TMPDIR) to a writable folder with room") from exc


def _export_into(folder: Path, name: str, head: nn.Module, with_features: bool) -> Path:
    path = folder / name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    outputs = ["probs", "features"] if with_features else ["probs"]
    axes = {"x": {0: "batch", 2: "height", 3: "width"}} | {o: {0: "batch", 2: "height", 3: "width"} for o in outputs}
    try:
        # the tracer's warnings about our models are filtered at import (ignore_tracer_warnings)
        torch.onnx.export(head.cpu().eval(), (torch.zeros(1, 3, 256, 256),), str(tmp), input_names=["x"],
                          output_names=outputs, dynamic_axes=axes, opset_version=17, dynamo=False)
        os.replace(tmp, path)  # atomic: concurrent workers may export the same model
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: ONNX Runtime's words for a graph file it cannot read or parse (truncated, unreadable, gone)
_FILE_AT_FAULT = re.compile(r"INVALID_PROTOBUF|NO_SUCHFILE|system error number|[Pp]ermission denied|Protobuf parsing")


def _cached_graph_session(head: nn.Module, card: dict[str, Any], with_features: bool, options: Any) -> Any:
    """An ONNX Runtime session of the head's cached graph (``export_onnx``); a cached graph that cannot
    be loaded is exported again into this process's scratch folder, with a warning naming it.

    Why: a cached file that was there was used as it was, so a graph left truncated (a full disk while
    another process exported it) or unreadable (a colleague's mode-600 file in a shared GEOSEG_CACHE)
    failed every run, for ever, with ONNX Runtime's 'INVALID_PROTOBUF' or 'system error number 13'."""
    import onnxruntime as ort

    graph = export_onnx(head, card, with_features)
    try:
        return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 -- ORT's own classes (Fail, InvalidProtobuf...) share no base
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if not (_FILE_AT_FAULT.search(str(exc)) or not os.access(graph, os.R_OK)):
            raise  # not the file's fault (an operator, memory): exporting again would fail alike
        warnings.warn(f"the cached ONNX graph {graph} cannot be loaded ({reason}): exported again for this run; "
                      f"remove it (or make it readable) to keep the cache working", stacklevel=2)
        fresh = _export_into(_process_scratch_dir(), graph.name, head, with_features)
        return ort.InferenceSession(str(fresh), options, providers=["CPUExecutionProvider"])


_SCRATCH: Path | None = None


def _process_scratch_dir() -> Path:
    """A folder of this process's own (mode 0700, removed at exit) for graphs the cache cannot take."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="geoseg-onnx-"))
        atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
    return _SCRATCH


def int8_graph(card: dict[str, Any], notes: list[str] | None = None) -> Path | None:
    """The card's int8 ONNX graph (``int8_onnx``) when it was made from the card's current weights
    (a graph made from other weights is refused, and ``notes`` told: ``geoseg.notes.tell``). An
    ensemble's member (``geoseg.ensemble_heads.member_cards``) keeps its weights in the ensemble's
    file: it is checked against the SHA-256 of the weights it was copied from (``int8_source_sha256``)
    and the graph file against the SHA-256 it had when the ensemble was built (``graph_sha256``), so a
    graph re-quantised since from retrained weights is refused too."""
    entry, card_path = card.get("int8_onnx"), card.get("card_path")
    if not entry or not card_path:
        return None
    if Path(entry["file"]).name != entry["file"]:  # beside the card, never elsewhere
        tell(notes, f"int8 graph {entry['file']!r}: not a file name beside the card, not used")
        return None
    path = Path(card_path).parent / entry["file"]
    member = "int8_source_sha256" in card
    digest = card["int8_source_sha256"] if member else cards.weights_sha256(card)
    if not path.is_file() or digest is None:
        if member:
            tell(notes, f"{path.name}, the int8 graph of {card['name']}, not found: that member runs float32")
        return None
    if digest != entry.get("weights_sha256") or (member and file_sha256(path) != entry.get("graph_sha256")):
        tell(notes, f"{path.name} was made from other weights than {card['name']}'s: not used")
        return None
    return path


#: let ONNX Runtime's worker threads spin between runs (off: see TileModel)
ORT_SPINNING = False
#: ONNX Runtime's CPU memory arena (off: see TileModel)
ORT_ARENA = False


class TileModel:
    """One segmentation head ready for batched inference on uint8 RGB tiles.

    ``runtime``: 'torch' (inference mode; bf16 autocast on CUDA), 'onnx' (ONNX Runtime on the
    CPU, ~3x faster than eager torch here for U2-Net), 'int8' (ONNX Runtime with the card's
    statically quantised graph, ``geoseg.training.quantize``; a head without one, or asked for
    features, runs 'onnx' and ``runtime`` says so), or 'auto' (onnx on CPU, torch on CUDA).
    """

    def __init__(self, module: nn.Module, card: dict[str, Any], device: str = "cpu", runtime: str = "torch",
                 with_features: bool = False, notes: list[str] | None = None) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if runtime == "auto":
            runtime = "onnx" if device == "cpu" else "torch"
        if runtime in ("onnx", "int8") and device != "cpu":
            raise ValueError(f"the {runtime} runtime runs on the CPU only; use --runtime torch with --device cuda")
        graph = None
        if runtime == "int8":
            graph = int8_graph(card, notes) if not with_features else None
            runtime = "int8" if graph is not None else "onnx"
        self.card = card
        self.device = device
        self.runtime = runtime
        self.with_features = with_features
        self.n_classes = len(card["classes"])
        self.head = ProbabilityHead(module.eval(), card, with_features).eval()
        self._session = None
        if runtime in ("onnx", "int8"):
            # ORT 1.2x+ writes a device id and a database under ~/.cache/Microsoft, and with a read-only
            # HOME prints a coloured "Failed to persist telemetry" line into every run's stderr
            os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.log_severity_level = 3
            # idle ORT workers would busy-wait for the next run, taking the cores from the tile
            # reads and the class map running beside the model (fast profile, 2 cores: medians +1-7 %
            # in three paired sittings, accurate within noise; bench/predict.py --toggle ort-spinning)
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if ORT_SPINNING else "0")
            # ORT's arena keeps every buffer it ever grew for reuse: the accurate profile (its building head two
            # members since session 25) peaked at 2608 MiB on zanzibar_z21_1 with it, over the 2.5 GB goal, and
            # 1551 MiB without; the fast one 1211 -> 1005 MiB. It costs speed: accurate 0.140 -> 0.119 Mpx/s,
            # fast 0.752 -> 0.708 (bench/predict.py --what memory; --what pairs --toggle ort-arena). Without
            # the building heads' arenas alone the accurate ratio to a 1 Mpx scene stayed over 1.3x (1.35x).
            options.enable_cpu_mem_arena = ORT_ARENA
            if graph is not None:  # the card's int8 graph: checked against its weights (int8_graph)
                self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
            else:
                self._session = _cached_graph_session(self.head, card, with_features, options)
        else:
            self.head.to(device)

    @property
    def gsd_m(self) -> float | None:
        value = self.card.get("gsd_m")
        return float(value) if value else None

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 (B, 3, H, W) tiles, got {images.dtype} {images.shape}")
        if self._session is not None:
            return self._session.run(None, {"x": images.astype(np.float32)})
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True).float()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"):
            out = self.head(x)
        out = out if isinstance(out, tuple) else (out,)
        return [o.float().cpu().numpy() for o in out]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 (B, n_classes, H, W) of uint8 tiles (B, 3, H, W)."""
        return self._run(images)[0]

    def probabilities_and_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and full-resolution decoder features (B, C, H, W) in one pass (for the GCN)."""
        if not self.with_features:
            raise ValueError("this TileModel was built without features (with_features=False)")
        probs, feats = self._run(images)
        return probs, feats


def refine_with_gcn(
    image: np.ndarray,
    probs: np.ndarray,
    features: np.ndarray,
    valid: np.ndarray,
    gcn: nn.Module,
    gcn_card: dict[str, Any],
) -> np.ndarray:
    """Land-cover probabilities (C, H, W) of one tile fused with the GCN's per-superpixel classes.

    ``probs`` channel 0 is the never-predicted 'unlabeled' class; the graph sees classes
    1..C-1 (``geoseg.models.gcn.refine_probabilities``). Tiles without valid pixels pass through.
    """
    from geoseg.models.gcn import refine_probabilities

    if not valid.any():
        return probs
    predictable = probs[1:] / np.clip(probs[1:].sum(0, keepdims=True), 1e-6, None)
    with torch.inference_mode():
        fused = refine_probabilities(gcn, gcn_card, np.ascontiguousarray(np.moveaxis(image, 0, -1)), features,
                                     predictable)
    return np.concatenate([np.zeros_like(probs[:1]), fused.astype(np.float32)], 0)
