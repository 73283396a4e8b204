"""Tiling engine: windowed reading, GSD, masks, labels, chips, blending, COGs, batch runs (no torch)."""
