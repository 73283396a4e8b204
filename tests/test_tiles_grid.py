"""Grid invariants: cores partition the raster, read windows have the tile size."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiles.grid import axis_starts, stretched_size, tile_grid


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


@settings(max_examples=80, deadline=None)
@given(grids(), st.integers(1, 96))
def test_rectangular_tiles_also_partition_the_raster(args, size_y):
    width, height, size, overlap = args
    overlap = min(overlap, size_y - 1)
    count = np.zeros((height, width), dtype=np.int32)
    for t in tile_grid(width, height, size, overlap, size_y=size_y):
        assert (t.read.width, t.read.height) == (size, size_y)
        count[t.core.toslices()] += 1
    assert (count == 1).all()


def test_a_stretched_side_saves_the_mostly_repeated_edge_tile():
    # 2048 px in 512 px tiles with 64 px overlap: 5 windows (2560 px); 4 x 576 px = 2304 px
    assert stretched_size(2048, 512, 64) == 576
    assert len(tile_grid(2048, 1024, 576, 64, size_y=stretched_size(1024, 512, 64))) == 8  # was 15
    assert stretched_size(400, 512, 64) == 512  # smaller than a tile: unchanged


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6000), st.integers(2, 20), st.integers(0, 4))
def test_stretched_sides_never_cost_more_pixels(length, size_32, overlap_32):
    size, overlap = 32 * size_32, min(32 * overlap_32, 32 * size_32 - 32)
    side = stretched_size(length, size, overlap)
    assert size <= side <= 1.25 * size and side % 32 == 0
    assert len(axis_starts(length, side, overlap)) * side <= len(axis_starts(length, size, overlap)) * size


@settings(max_examples=300, deadline=None)
@given(grids(), st.sampled_from([2, 8, 32]))
def test_aligned_grids_start_on_the_multiple_and_still_partition(args, align):
    width, height, size, overlap = args
    count = np.zeros((height, width), dtype=np.int32)
    tiles = tile_grid(width, height, size, overlap, align=align)
    aligned = size % align == 0 and size - overlap >= align  # else the grid is the unaligned one
    if not aligned:
        assert tiles == tile_grid(width, height, size, overlap)
    for t in tiles:
        if aligned:
            assert t.read.col_off % align == 0 and t.read.row_off % align == 0
            assert t.read.col_off + size < max(width, size) + align  # past the raster by less than `align`
        rows, cols = t.core_slices
        assert 0 <= rows.start < rows.stop <= size and 0 <= cols.start < cols.stop <= size
        count[t.core.toslices()] += 1
    assert (count == 1).all()
    if aligned:  # snapping only ever widens the overlaps
        first_row = [t for t in tiles if t.row == 0]
        for a, b in zip(first_row[:-1], first_row[1:]):
            assert a.read.col_off + size - b.read.col_off >= overlap


def test_the_aligned_last_tile_ends_past_the_raster_instead_of_off_the_grid():
    # 1019 px in 256 px tiles: the flush start 763 would sit 27 px off the 32 px grid
    assert axis_starts(1019, 256, 64) == [0, 192, 384, 576, 763]
    assert axis_starts(1019, 256, 64, align=32) == [0, 192, 384, 576, 768]

