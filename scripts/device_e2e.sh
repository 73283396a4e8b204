#!/usr/bin/env bash
# End-to-end GPU figure of `geoseg predict` (issue 4) on the lent GPU machine.
#
# Why a script: that machine has torch, torch-geometric, scikit-image, scipy, pandas, typer,
# click and onnxruntime for Python 3.12, but no GDAL stack (rasterio, pyogrio, pyproj, shapely,
# geopandas) and not rio-cogeo or pydantic, which `geoseg.pipeline` imports (the list: what
# `import geoseg.pipeline, geoseg.cli` loads here, less .library/device/KINDS.md's packages).
# Their manylinux wheels are ~81 MB and a call carries at most 64 MiB with the working tree
# (21 MB of tracked files, 20 MB of them the weights), so they travel in two calls and are
# installed into .site/, an ignored folder the warm machine keeps between calls.
#
# Here, once (downloads ~82 MB into .whl/e2e1 and .whl/e2e2, copies two small scenes into .e2e/):
#     bash scripts/device_e2e.sh prepare
# Then two device calls, back to back (the machine goes back after a short idle time):
#     run(command="bash scripts/device_e2e.sh install e2e1", carry=[".whl/e2e1"])
#     run(command="bash scripts/device_e2e.sh install e2e2 && bash scripts/device_e2e.sh bench",
#         carry=[".whl/e2e2", ".e2e"], timeout_s=420)
# The bench prints `bench/predict.py --what speed` for both profiles on zanzibar_z19_1 (0.3 m,
# the CPU figure's scene) with --device cuda: torch runtime, bf16 autocast, batches of 8 tiles.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${GEOSEG_DATA:-../shared/data}

case "${1:-}" in
prepare)
    download() {  # the versions this repo's .venv runs, built for the device's CPython 3.12 (PYVER)
        local dest=$1; shift
        mkdir -p "$dest"
        .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" "$@"
    }
    version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
    download .whl/e2e1 "rasterio==$(version rasterio)" "affine==$(version affine)" "cligj==$(version cligj)" \
        "click-plugins==$(version click-plugins)" "shapely==$(version shapely)" "geopandas==$(version geopandas)" \
        "rio-cogeo==$(version rio-cogeo)" "morecantile==$(version morecantile)" "pydantic==$(version pydantic)" \
        "pydantic-core==$(version pydantic-core)" "annotated-types==$(version annotated-types)" \
        "typing-inspection==$(version typing-inspection)"
    download .whl/e2e2 "pyogrio==$(version pyogrio)" "pyproj==$(version pyproj)"
    mkdir -p .e2e/data/buildings/zanzibar .e2e/data/buildings/kampala
    cp "$DATA/buildings/zanzibar/zanzibar_z19_1.tif" .e2e/data/buildings/zanzibar/
    cp "$DATA/buildings/kampala/kampala_z19_2.tif" .e2e/data/buildings/kampala/  # the bench's warm-up scene
    du -sh .whl/e2e1 .whl/e2e2 .e2e
    ;;
install)
    part=${2:?install e2e1 or e2e2}
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/"$part"/*.whl
    ;;
bench)
    export PYTHONPATH=$PWD/.site:$PWD GEOSEG_DATA=$PWD/.e2e/data
    $PY -c "import rasterio, pyogrio, geopandas, torch; print('rasterio', rasterio.__version__, 'gdal', rasterio.__gdal_version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))"
    $PY bench/predict.py --what speed --device cuda --profiles accurate,fast --threads 16 \
        --scene .e2e/data/buildings/zanzibar/zanzibar_z19_1.tif
    ;;
*)
    echo "usage: $0 prepare | install e2e1|e2e2 | bench" >&2
    exit 2
    ;;
esac
