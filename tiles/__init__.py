"""Tiling engine: windowed reading, GSD, masks, labels, chips, blending, COGs, batch runs (no torch)."""
from tiles.georeferencing_warnings import ignore_georeferencing_warnings

# once, at import, before any thread runs (tiles/georeferencing_warnings.py says why not at run time)
ignore_georeferencing_warnings()
