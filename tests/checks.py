"""Assertions several test modules share (imported as ``from checks import ...``)."""
from __future__ import annotations

import numpy as np
import shapely


def assert_one_line_error(result, command: str, *words: str) -> None:
    """A CLI user error: exit 1, no escaped Python error, one stderr line 'geoseg COMMAND: error: ...'."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped Python error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"geoseg {command}: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def walls_between(polygons: list) -> dict[tuple[int, int], tuple[float, float]]:
    """(i, j) -> (length of the boundary the two polygons share, area of their overlap), touching pairs."""
    geoms = np.asarray(polygons, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pair = left < right
    left, right = left[pair], right[pair]
    wall = shapely.length(shapely.intersection(shapely.boundary(geoms[left]), shapely.boundary(geoms[right])))
    overlap = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    return {(int(i), int(j)): (float(w), float(o)) for i, j, w, o in zip(left, right, wall, overlap)}
