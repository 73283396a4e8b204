"""Squaring building outlines (``--regularize``) without tearing shared walls apart.

Each group of touching buildings (they came from one connected component of the
mask) gets one dominant orientation, so walls they share stay parallel. Every
ring is rotated into that frame, simplified, and each edge is snapped to the
horizontal or the vertical; consecutive edges of the same direction merge into
one wall at their length-weighted mean position, and corners are the crossings
of consecutive walls: right angles only. Finally, inside a group, overlaps are
cut away and small gaps along shared walls closed, so neighbours still touch
but never overlap.

Pure shapely/numpy over pixel coordinates (any metric-ish planar frame works).
"""
from __future__ import annotations

import numpy as np
import shapely
from shapely import affinity


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


def regularize_polygon(geom: shapely.Polygon, angle: float, tolerance: float) -> shapely.Polygon:
    """One polygon squared in the frame rotated by ``angle``; the input back if squaring fails."""
    origin = geom.centroid
    rotated = affinity.rotate(geom, -angle, origin=origin, use_radians=True)
    rotated = shapely.simplify(rotated, tolerance, preserve_topology=True)
    if not isinstance(rotated, shapely.Polygon) or rotated.is_empty:
        return geom
    shell = _rectilinear_ring(np.asarray(rotated.exterior.coords))
    if shell is None:
        minx, miny, maxx, maxy = rotated.bounds
        squared = shapely.box(minx, miny, maxx, maxy)
    else:
        holes = [h for h in (_rectilinear_ring(np.asarray(r.coords)) for r in rotated.interiors) if h is not None]
        squared = shapely.Polygon(shell, holes)
    squared = _largest_polygon(shapely.make_valid(squared))
    if squared is None or not (0.5 * geom.area <= squared.area <= 2.0 * geom.area):
        return geom
    return affinity.rotate(squared, angle, origin=origin, use_radians=True)


def regularize_buildings(geoms: list, groups: list, tolerance: float) -> list:
    """Square every building; inside each group of touching buildings keep shared walls shut.

    ``groups[i]`` identifies the connected component building ``i`` came from;
    ``tolerance`` (same unit as the coordinates) is the simplification tolerance and
    the widest gap along a shared wall that gets closed.
    """
    if len(geoms) != len(groups):
        raise ValueError("geoms and groups must have the same length")
    out = list(geoms)
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(int(g), []).append(i)
    for members in by_group.values():
        originals = [geoms[i] for i in members]
        # pixel staircases vote for 0 degrees: measure the orientation on simplified outlines
        angle = dominant_angle([shapely.simplify(g, tolerance) for g in originals])
        squared = [regularize_polygon(g, angle, tolerance) for g in originals]
        if len(members) > 1:
            squared = _resolve_shared_walls(originals, squared, tolerance)
        for i, geom in zip(members, squared):
            out[i] = geom
    return out


def _resolve_shared_walls(originals: list, squared: list, tolerance: float) -> list:
    """Cut overlaps between neighbours and close gaps that squaring opened along their shared walls."""
    placed: list = []
    result = []
    for original, geom in zip(originals, squared):
        if placed:
            taken = shapely.union_all(placed)
            geom = geom.difference(taken)
            # close the gap squaring opened along the shared wall: grow the squared shape
            # towards its neighbours only (mitred buffers keep the corners square)
            reach = 1.5 * tolerance
            near = geom.buffer(reach, join_style="mitre").intersection(taken.buffer(reach, join_style="mitre"))
            geom = shapely.union(geom, near.difference(taken))
            geom = _largest_polygon(shapely.make_valid(geom)) or original.difference(taken)
            geom = _largest_polygon(shapely.make_valid(geom)) or original
        placed.append(geom)
        result.append(geom)
    return result


def _largest_polygon(geom) -> shapely.Polygon | None:
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty]
    if not parts:
        return None
    return max(parts, key=lambda p: p.area)
