"""Squaring building outlines (``--regularize``) without tearing shared walls apart.

Each group of touching buildings (they came from one connected component of the
mask) gets one dominant orientation, so walls they share stay parallel. Every
ring is rotated into that frame, simplified, and each edge is snapped to the
horizontal or the vertical; consecutive edges of the same direction merge into
one wall at their length-weighted mean position, and corners are the crossings
of consecutive walls: right angles only.

Squared one by one, two neighbours put their common wall at two different places
(each averages it with its own other edges), and cutting overlaps and growing
towards the neighbour (mitred buffers, the first version) left gaps and wedges:
kampala_z19_1 kept 46 of its 107 m of shared wall. So a group is squared
together: the lines of all its squared walls, and the ends of the walls its
buildings shared, cut the frame into rectangular cells (lines closer than half
the tolerance merged). A cell goes to the building whose squared outline holds
its centre (to the one whose own pixels hold it where several do). Then each
building grows, cell by cell from its own cells, into the unclaimed cells that
its pixels hold near another building and into those within two tolerances of
a wall it shared: that closes the seams squaring opened, and only those. Each
building is the union of its cells, traced with the vectoriser's tracer, so
neighbours share their walls vertex for vertex and never overlap. Last,
overlaps between buildings of different groups (a pixel apart, both squared
outwards) go to the building whose own outline covers more of them. A lone
building is squared the same way, as a group of one: squared ring by ring, a
hole could end up millimetres from its shell (merging lines keeps rings apart).

Pure shapely/numpy over pixel coordinates (any metric-ish planar frame works).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import shapely
from shapely import affinity

from geoseg.polygonize import polygons_from_labels


def dominant_angle(geoms: list) -> float:
    """Dominant edge orientation (radians, in [0, pi/2)) of some polygons, length-weighted.

    Angles are folded modulo 90 degrees with the 4-theta trick, so walls at right angles
    vote for the same orientation.
    """
    sx = sy = 0.0
    for geom in geoms:
        for ring in [geom.exterior, *geom.interiors]:
            xy = np.asarray(ring.coords)
            d = np.diff(xy, axis=0)
            length = np.hypot(d[:, 0], d[:, 1])
            angle = np.arctan2(d[:, 1], d[:, 0])
            sx += float(np.sum(length * np.cos(4 * angle)))
            sy += float(np.sum(length * np.sin(4 * angle)))
    if sx == 0 and sy == 0:
        return 0.0
    return float(np.mod(np.arctan2(sy, sx) / 4, np.pi / 2))


def _rectilinear_ring(xy: np.ndarray) -> np.ndarray | None:
    """Snap a closed ring (already in the dominant frame) to horizontal/vertical walls."""
    d = np.diff(xy, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    ok = length > 1e-9
    d, length, start, end = d[ok], length[ok], xy[:-1][ok], xy[1:][ok]
    if len(d) < 4:
        return None
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    # position of each edge's wall: mean y for horizontal edges, mean x for vertical ones
    pos = np.where(horizontal, (start[:, 1] + end[:, 1]) / 2, (start[:, 0] + end[:, 0]) / 2)
    # rotate so the ring starts at a change of direction, then merge runs
    changes = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if changes.size < 2:
        return None
    shift = changes[0]
    horizontal, pos, length = (np.roll(a, -shift) for a in (horizontal, pos, length))
    run_id = np.cumsum(np.r_[True, horizontal[1:] != horizontal[:-1]]) - 1
    n_runs = run_id[-1] + 1
    if n_runs < 4 or n_runs % 2:
        return None
    wall = np.bincount(run_id, weights=pos * length) / np.bincount(run_id, weights=length)
    run_horizontal = horizontal[np.r_[0, np.flatnonzero(np.diff(run_id)) + 1]]
    corners = []
    for i in range(n_runs):
        j = (i + 1) % n_runs
        a, b = wall[i], wall[j]
        corners.append((b, a) if run_horizontal[i] else (a, b))
    corners.append(corners[0])
    return np.asarray(corners)


def _square(rotated: shapely.Polygon, tolerance: float) -> shapely.Polygon | None:
    """A polygon already in the dominant frame, squared; None when that fails or changes its area
    by more than a factor of 2."""
    simple = shapely.simplify(rotated, tolerance, preserve_topology=True)
    if not isinstance(simple, shapely.Polygon) or simple.is_empty:
        return None
    shell = _rectilinear_ring(np.asarray(simple.exterior.coords))
    if shell is None:
        minx, miny, maxx, maxy = simple.bounds
        squared = shapely.box(minx, miny, maxx, maxy)
    else:
        holes = [h for h in (_rectilinear_ring(np.asarray(r.coords)) for r in simple.interiors) if h is not None]
        squared = shapely.Polygon(shell, holes)
    squared = _largest_polygon(shapely.make_valid(squared))
    if squared is None or not (0.5 * rotated.area <= squared.area <= 2.0 * rotated.area):
        return None
    return squared


def regularize_buildings(geoms: list, groups: list, tolerance: float,
                         progress: Callable[[float], None] | None = None) -> list:
    """Square every building; the buildings of a group of touching ones are squared together.

    ``groups[i]`` identifies the connected component building ``i`` came from;
    ``tolerance`` (same unit as the coordinates) is the simplification tolerance; walls of
    one group closer than half of it become one wall. Buildings of a group that shared a wall
    share one after squaring, and none overlaps another. ``progress`` gets the share of
    buildings squared (about 100 calls: a dense scene's thousands take many seconds).
    """
    if len(geoms) != len(groups):
        raise ValueError("geoms and groups must have the same length")
    out = list(geoms)
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(int(g), []).append(i)
    step, done = max(1, len(geoms) // 100), 0
    for members in by_group.values():
        if progress is not None and done // step != (done + len(members)) // step:
            progress(done / len(geoms))
        done += len(members)
        originals = [geoms[i] for i in members]
        # pixel staircases vote for 0 degrees: measure the orientation on simplified outlines
        angle = dominant_angle([shapely.simplify(g, tolerance) for g in originals])
        # a lone building goes through the cells too: its walls closer than half the tolerance
        # merge (squared alone, a hole of nairobi_z19_1 came 2 mm from its shell, and the GeoJSON's
        # 7 decimals made that a MultiPolygon)
        squared = _square_group(originals, angle, tolerance)
        for i, geom in zip(members, squared):
            out[i] = geom
    return _part_groups(out, list(geoms), groups)


def _part_groups(squared: list, originals: list, groups: list) -> list:
    """Cut overlaps between buildings of different groups (squaring pushes walls up to a
    tolerance outwards, and groups may lie a pixel apart): the overlap goes to the building whose
    own outline covers more of it."""
    geoms = np.asarray(squared, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist()):
        if i >= j or groups[i] == groups[j]:
            continue
        overlap = squared[i].intersection(squared[j])
        if overlap.area <= 0:
            continue
        keep_i = originals[i].intersection(overlap).area >= originals[j].intersection(overlap).area
        winner, loser = (i, j) if keep_i else (j, i)
        squared[loser] = _largest_polygon(shapely.make_valid(squared[loser].difference(squared[winner]))) \
            or squared[loser]
    return squared


def _square_group(originals: list, angle: float, tolerance: float) -> list:
    """Touching buildings squared together in one frame: a partition of rectangular cells (module docstring).

    A building whose squaring fails keeps its outline, and the others keep off it.
    """
    origin = shapely.centroid(originals[0])
    rotated = [affinity.rotate(g, -angle, origin=origin, use_radians=True) for g in originals]
    squared = [_square(g, tolerance) for g in rotated]
    ok = [k for k, g in enumerate(squared) if g is not None]
    if not ok:
        return list(originals)
    own = [rotated[k] for k in ok]
    contacts = _contacts(own)
    # cells: between the lines of the squared walls and of the ends of the walls neighbours share
    xy = np.concatenate([shapely.get_coordinates([squared[k] for k in ok]),
                         shapely.get_coordinates([line for _, _, line in contacts]).reshape(-1, 2)])
    xs, ys = _wall_lines(xy[:, 0], tolerance / 2), _wall_lines(xy[:, 1], tolerance / 2)
    cx, cy = np.meshgrid((xs[1:] + xs[:-1]) / 2, (ys[1:] + ys[:-1]) / 2)
    centres = shapely.points(cx, cy)
    in_squared = np.stack([shapely.contains_xy(squared[k], cx, cy) for k in ok])
    in_own = np.stack([shapely.contains_xy(g, cx, cy) for g in own])
    blocked = np.zeros(cx.shape, dtype=bool)
    for k in set(range(len(originals))) - set(ok):  # failed: kept as they are, the others keep off
        blocked |= shapely.contains_xy(rotated[k], cx, cy)
    # a cell several squared outlines claim goes to the one whose own pixels hold its centre
    claims = in_squared.sum(axis=0)
    owner = np.where(claims > 0, np.argmax(in_squared & (in_own | (claims == 1)), axis=0), -1)
    owner[blocked] = -1
    # where a building may grow: its own pixels near another squared building, and the
    # surroundings of a wall it shared (not into a third building's pixels)
    reach = 2 * tolerance
    near = np.stack([shapely.dwithin(squared[k], centres, reach) for k in ok])
    n_near, n_own = near.sum(axis=0), in_own.sum(axis=0)  # counts: 'any other' without a copy per building
    grow = in_own & (n_near - near > 0)
    for a, b, line in contacts:
        seam = shapely.dwithin(line, centres, reach)
        for i in (a, b):
            grow[i] |= seam & (n_own - in_own[i] == 0)
    owner = _close_seams(owner, grow & ~blocked)
    traced, value = polygons_from_labels((owner + 1).astype(np.int32))
    # polygons_from_labels puts cell (row r, column c) at [c, c + 1] x [r, r + 1]: back to the wall lines
    traced = shapely.transform(traced, lambda p: np.column_stack([xs[np.rint(p[:, 0]).astype(int)],
                                                                 ys[np.rint(p[:, 1]).astype(int)]]))
    kept = shapely.union_all([rotated[k] for k in range(len(originals)) if k not in ok])
    result = list(originals)
    for index, k in enumerate(ok, start=1):
        pieces = traced[value == index]
        best = max(pieces, key=lambda p: p.area) if pieces.size else None
        if best is None or not 0.5 * rotated[k].area <= best.area <= 2.0 * rotated[k].area:
            # squaring left it nothing sensible: its own outline, off the others' cells
            best = _largest_polygon(rotated[k].difference(shapely.union_all(traced[value != index])))
        if best is not None and not kept.is_empty:
            best = _largest_polygon(best.difference(kept))
        if best is not None:
            result[k] = affinity.rotate(best, angle, origin=origin, use_radians=True)
    return result


def _contacts(polygons: list) -> list:
    """(i, j, shared boundary) for the pairs of polygons that share a wall (not just a point)."""
    geoms = np.asarray(polygons, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pair = left < right
    left, right = left[pair], right[pair]
    lines = shapely.intersection(shapely.boundary(geoms[left]), shapely.boundary(geoms[right]))
    wall = shapely.length(lines) > 0
    return list(zip(left[wall].tolist(), right[wall].tolist(), lines[wall]))


def _wall_lines(values: np.ndarray, merge: float) -> np.ndarray:
    """Sorted distinct wall positions; runs of positions less than ``merge`` apart become their mean."""
    values = np.sort(values)
    run = np.cumsum(np.r_[True, np.diff(values) > merge]) - 1
    return np.bincount(run, weights=values) / np.bincount(run)


def _close_seams(owner: np.ndarray, grow: np.ndarray) -> np.ndarray:
    """Grow each building ``k`` cell by cell from its squared cells into the unclaimed cells of ``grow[k]``.

    Growth starts from the building's own cells, so it fills the seam between two walls that
    squaring put apart and nothing else: notches squaring removed away from the neighbours
    stay removed.
    """
    owner = owner.copy()
    for _ in range(owner.size):
        padded = np.pad(owner, 1, constant_values=-1)
        around = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
        free = owner < 0
        changed = False
        for k in range(grow.shape[0]):
            fill = free & grow[k] & (around == k).any(axis=0)
            if fill.any():
                owner[fill] = k
                free &= ~fill
                changed = True
        if not changed:
            break
    return owner


def _largest_polygon(geom) -> shapely.Polygon | None:
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty]
    if not parts:
        return None
    return max(parts, key=lambda p: p.area)
