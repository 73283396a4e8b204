"""``PredictOptions``: what one ``geoseg predict`` run (or one service job) is asked to do.

Why a module of its own: the CLI, the service, the head loader and the pipeline all read these
options; none of them should import the others to get at them.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

__all__ = ["RUNTIMES", "PredictError", "PredictOptions"]

#: what ``geoseg.infer.TileModel`` (and ``--runtime``) accepts. Here, not in ``geoseg.infer``: the
#: service's server process reads ``PredictOptions`` to check uploads and must not import torch
#: (~190 MiB of resident memory, and its import time) for a tuple of names
RUNTIMES = ("auto", "torch", "onnx", "int8")


class PredictError(ValueError):
    """A prediction that cannot run, with a one-line reason for the user."""


@dataclass
class PredictOptions:
    """The options of ``geoseg predict`` (and of the service's jobs)."""

    tile_size: int = 512
    overlap: int = 64
    refine: str = "gcn"  # gcn | none
    buildings: bool = True
    classmap: bool = True
    regularize: bool = False
    device: str = "auto"  # auto | cpu | cuda
    gsd: float | None = None  # metres: overrides the input's own GSD
    profile: str = "accurate"  # accurate | fast
    #: auto (onnx on CPU, torch on CUDA) | torch | onnx | int8 (CPU: quantised graphs where a card ships one)
    runtime: str = "auto"
    #: pixels of context read around each tile; None: enough to show the model its card's tile_size
    context: int | None = None
    batch_size: int | None = None  # tiles per forward pass; None: 1 on CPU (peak memory), 8 on CUDA
    #: smallest building kept, m²; None: the building card's ``postprocess.min_area_m2``, else 3
    min_area_m2: float | None = None
    #: a pixel is building when P(interior) + P(outline) >= this (argmax would need > P(background));
    #: None: the building card's ``postprocess.threshold``, else 0.5
    building_threshold: float | None = None
    simplify_m: float = 0.3
    #: task (buildings | landcover | gcn) -> model card or folder, instead of the shipped weights
    model_dirs: dict[str, str] = field(default_factory=dict)
    #: 1-based bands read as red, green, blue (``--bands 3,2,1``); None: the raster's colour labels or
    #: band descriptions, else bands 1-3 (``tiles.normalize.select_bands``)
    bands: tuple[int, int, int] | None = None
    #: predict an input more than ``geoseg.coarse_input.MAX_COARSER`` times coarser than a head's
    #: working GSD (refused otherwise: ``--allow-coarse``)
    allow_coarse: bool = False

    #: the numeric fields: integers, numbers, and which may be None
    _INTEGERS = {"tile_size": False, "overlap": False, "context": True, "batch_size": True}
    _NUMBERS = {"gsd": True, "min_area_m2": True, "building_threshold": True, "simplify_m": False}

    def _check_numbers(self) -> None:
        """A library user's ``PredictOptions(tile_size="512")`` failed with Python's "'<' not supported
        between 'str' and 'int'" (the command line and the service convert their values first)."""
        for fields, kind, what in ((self._INTEGERS, numbers.Integral, "an integer"),
                                   (self._NUMBERS, numbers.Real, "a number")):
            for name, optional in fields.items():
                value = getattr(self, name)
                if (value is None and optional) or (isinstance(value, kind) and not isinstance(value, bool)):
                    continue
                raise PredictError(f"PredictOptions.{name} must be {what}{' or None' if optional else ''}, "
                                   f"got {value!r}")

    def __post_init__(self) -> None:
        if isinstance(self.bands, list):  # a service job's options come back from JSON as lists
            self.bands = tuple(self.bands)

    def check(self) -> None:
        """Raise ``PredictError`` on inconsistent options."""
        self._check_numbers()
        if self.tile_size < 32:
            raise PredictError(f"--tile-size must be >= 32, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size // 2:
            # a --tile-size of 64 alone failed on the default --overlap as if the user had given it
            raise PredictError(f"--overlap {self.overlap} must be under half the tile size ({self.tile_size} // 2 = "
                               f"{self.tile_size // 2}; --overlap is 64 unless given): give a smaller --overlap or a "
                               f"--tile-size of at least {2 * self.overlap + 2}"
                               if self.overlap >= 0 else f"--overlap must be >= 0, got {self.overlap}")
        # checked here, not when the models load: a batch failed every input with the same error
        if self.device not in ("auto", "cpu", "cuda"):
            raise PredictError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.refine not in ("gcn", "none"):
            raise PredictError(f"--refine must be gcn or none, got {self.refine!r}")
        if self.profile not in ("fast", "accurate"):
            raise PredictError(f"--profile must be fast or accurate, got {self.profile!r}")
        # finite: an infinite --gsd scales every area and tolerance to 0 or inf (and report.json's GSD)
        if self.gsd is not None and not (math.isfinite(self.gsd) and self.gsd > 0):
            raise PredictError(f"--gsd must be a finite positive number of metres, got {self.gsd}")
        if not (self.buildings or self.classmap):
            raise PredictError("nothing to do: both --no-buildings and --no-classmap given")
        if self.runtime not in RUNTIMES:
            raise PredictError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.min_area_m2 is not None and not (math.isfinite(self.min_area_m2) and self.min_area_m2 >= 0):
            raise PredictError(f"--min-area must be a finite number >= 0 of square metres, got {self.min_area_m2}")
        if not (math.isfinite(self.simplify_m) and self.simplify_m >= 0):
            raise PredictError(f"--simplify must be a finite number >= 0 of metres (0: no simplification), "
                               f"got {self.simplify_m}")
        if self.building_threshold is not None and not 0.0 < self.building_threshold < 1.0:
            raise PredictError(f"building threshold must be in (0, 1), got {self.building_threshold}")
        if self.context is not None and self.context < 0:
            raise PredictError(f"--context must be >= 0 pixels, got {self.context}")
        if self.batch_size is not None and self.batch_size < 1:
            raise PredictError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.bands is not None and (len(self.bands) != 3 or not all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in self.bands)):
            raise PredictError(f"--bands expects three 1-based band numbers for red, green and blue, "
                               f"got {self.bands!r}")
