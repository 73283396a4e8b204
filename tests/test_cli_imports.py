"""What building the command line costs: ``geoseg --help``, ``geoseg COMMAND --help`` and the
``geoseg serve`` process import no raster, vector or model library; each command imports its own
when it runs.

Why: ``geoseg.cli`` imports every command module, and those imported geopandas, pandas, shapely,
scipy (``tiles.labels``, ``tiles.chips``), rasterio and numpy at module level, so every ``geoseg``
call paid ~1 s of imports before it did anything, and the ``geoseg serve`` process idled at
~205 MB RSS (~120 MB without them; api/ itself needs numpy and rasterio, never the rest).
Each check runs in a fresh interpreter: this test session has imported everything long ago.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: what no ``--help`` may import
HEAVY = ("torch", "numpy", "rasterio", "pyproj", "geopandas", "pandas", "shapely", "pyogrio", "scipy")
#: what the server process may not import (api/ reads rasters with rasterio and numpy; the job
#: workers, other processes, load the models and the vector libraries)
NOT_IN_SERVER = ("torch", "geopandas", "pandas", "shapely", "pyogrio", "scipy")


def _run(code: str, tmp_path: Path) -> dict:
    """Run ``code`` in a fresh interpreter of this checkout; it prints one JSON line, returned."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_of_the_app_and_of_every_command_imports_no_heavy_library(tmp_path):
    code = f"""
import contextlib, io, json, sys
from geoseg.cli import app
seen = {{}}
for args in (["--help"], ["tile", "--help"], ["train", "--help"], ["predict", "--help"], ["eval", "--help"],
             ["serve", "--help"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            app(args, prog_name="geoseg")
        except SystemExit as stop:
            assert stop.code == 0, (args, stop.code)
    assert "Usage: geoseg" in out.getvalue(), out.getvalue()
    seen[" ".join(args)] = [name for name in {HEAVY!r} if name in sys.modules]
print(json.dumps(seen))
"""
    seen = _run(code, tmp_path)
    assert len(seen) == 6
    assert seen == {args: [] for args in seen}


def test_the_serve_process_imports_no_vector_library_scipy_or_torch(tmp_path):
    """``geoseg serve`` as a user runs it, up to uvicorn: the app uvicorn would import by name
    (``api.app:create_app``), made and started (its lifespan: job table, model catalog, supervisor)
    in the same process, and asked for ``/healthz``."""
    code = f"""
import json, sys
import uvicorn
from fastapi.testclient import TestClient
from uvicorn.importer import import_from_string

answered = []

def run(target, factory=False, **options):  # what uvicorn.run makes of the same arguments, served in-process
    made = import_from_string(target)
    with TestClient(made() if factory else made) as client:
        answered.append(client.get("/healthz").status_code)

uvicorn.run = run
from geoseg.cli import app
try:
    app(["serve", "--data-dir", {str(tmp_path / 'svc')!r}, "--port", "8799"], prog_name="geoseg")
except SystemExit as stop:
    assert not stop.code, stop.code
print(json.dumps({{"answered": answered, "loaded": [name for name in {NOT_IN_SERVER!r} if name in sys.modules]}}))
"""
    result = _run(code, tmp_path)
    assert result["answered"] == [200]
    assert result["loaded"] == []
