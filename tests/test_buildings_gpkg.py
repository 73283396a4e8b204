"""buildings.gpkg as GIS software reads it: a GeoPackage version every reader supports, its R-tree
index, the input's CRS by its code (read with sqlite3, as a validator reads it, not with GDAL)."""
from __future__ import annotations

import sqlite3

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS

from geoseg.footprints import building_frame, write_buildings


def test_buildings_gpkg_is_geopackage_1_2_with_its_r_tree_index_in_the_input_crs(tmp_path):
    """GDAL 3.7+ writes GeoPackage 1.4 by default: ArcMap (1.1, 1.2), ArcGIS Pro 3.1 (up to 1.3)
    and GDAL 3.6 (a warning on each open, its validate_gpkg.py failing Req 75 on the 1.4 R-tree
    triggers) do not support it."""
    x0, y0 = 2690000.0, 1234000.0  # Swiss LV95 (EPSG:2056), as SWISSIMAGE tiles are
    houses = np.asarray([shapely.box(x0, y0, x0 + 9, y0 + 7), shapely.box(x0 + 20, y0, x0 + 26, y0 + 12)],
                        dtype=object)
    frame = building_frame(houses, [0.9, 0.8], CRS.from_epsg(2056), None, Affine.identity())
    frame["source"] = "lausanne.tif"
    write_buildings(frame, tmp_path, georeferenced=True)
    with sqlite3.connect(tmp_path / "buildings.gpkg") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # 'GPKG'
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        triggers = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        rtree = "rtree_buildings_geom"
        assert {f"{rtree}_insert", f"{rtree}_delete"} | {f"{rtree}_update{i}" for i in (1, 2, 3, 4)} <= triggers
        assert db.execute(f"SELECT count(*) FROM {rtree}").fetchone()[0] == 2
        assert db.execute("SELECT organization, organization_coordsys_id FROM gpkg_spatial_ref_sys s JOIN "
                          "gpkg_geometry_columns g ON s.srs_id = g.srs_id WHERE g.table_name = 'buildings'"
                          ).fetchone() == ("EPSG", 2056)
