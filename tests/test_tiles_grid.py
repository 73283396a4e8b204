"""Grid invariants: cores partition the raster, read windows have the tile size."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiles.grid import tile_grid


@st.composite
def grids(draw):
    size = draw(st.integers(1, 96))
    overlap = draw(st.integers(0, size - 1))
    limit = size + 12 * (size - overlap)  # at most ~13 tiles per axis keeps examples fast
    width = draw(st.integers(1, min(400, limit)))
    height = draw(st.integers(1, min(400, limit)))
    return width, height, size, overlap


@settings(max_examples=150, deadline=None)
@given(grids())
def test_cores_cover_every_pixel_exactly_once(args):
    width, height, size, overlap = args
    count = np.zeros((height, width), dtype=np.int32)
    for t in tile_grid(width, height, size, overlap):
        c = t.core
        assert c.width > 0 and c.height > 0
        count[int(c.row_off):int(c.row_off + c.height), int(c.col_off):int(c.col_off + c.width)] += 1
        # read window: exactly size x size; the core sits inside it
        assert (t.read.width, t.read.height) == (size, size)
        rows, cols = t.core_slices
        assert 0 <= rows.start < rows.stop <= size and 0 <= cols.start < cols.stop <= size
        # reads stay inside the raster along every axis at least `size` long
        if width >= size:
            assert 0 <= t.read.col_off and t.read.col_off + size <= width
        if height >= size:
            assert 0 <= t.read.row_off and t.read.row_off + size <= height
    assert (count == 1).all()


@settings(max_examples=60, deadline=None)
@given(grids())
def test_neighbours_overlap_by_at_least_the_overlap(args):
    width, height, size, overlap = args
    tiles = tile_grid(width, height, size, overlap)
    first_row = [t for t in tiles if t.row == 0]
    for a, b in zip(first_row[:-1], first_row[1:]):
        assert a.read.col_off + size - b.read.col_off >= overlap


@pytest.mark.parametrize("args", [(0, 10, 4, 0), (10, 10, 0, 0), (10, 10, 4, 4), (10, 10, 4, -1)])
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError):
        tile_grid(*args)
