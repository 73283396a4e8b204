"""geoseg.progress: one 0..1 fraction from the stages of a predict run, weighted by their work."""
from __future__ import annotations

import pytest

from geoseg.progress import StageProgress, StageWork, stage_weights, tracing_share


def test_stages_running_at_once_both_move_the_fraction_which_ends_at_exactly_one():
    """The class map written beside the building model: its blocks used to be dropped (the building
    stage had already moved the bar past the class map's span), and the bar then sat still at its
    end while the class map finished."""
    seen: list[tuple[float, str]] = []
    stages = StageProgress(lambda f, s: seen.append((f, s)), {"landcover": 1.0, "classmap": 1.0, "buildings": 2.0,
                                                            "write": 0.1})
    stages("landcover", 0.0)
    stages("landcover", 1.0)
    stages("buildings", 0.0)
    stages("classmap", 0.5)
    stages("buildings", 0.5)
    stages("classmap", 0.2)  # a stage reporting less than before does not take the bar back
    stages("classmap", 1.0)
    stages("buildings", 1.0)
    stages("write", 0.9)
    stages.finish()
    values = [f for f, _ in seen]
    assert values == sorted(values)
    assert values[3] == pytest.approx(1.5 / 4.1)  # landcover done + half the class map
    assert values[4] == pytest.approx(2.5 / 4.1)
    # the class map in the background does not take the name from the building model in front of it
    assert [s for _, s in seen[2:7]] == ["buildings"] * 5
    assert seen[-1] == (1.0, "write") and 1.0 not in values[:-1]


def test_weights_follow_the_pixels_each_stage_handles():
    """Fixed weights gave the land-cover head 53 % of the bar (4 + 3 for the GCN of 13.3) although it
    runs on a grid ~13x smaller than the building head's: 1.1 m against 0.3 m."""
    work = StageWork(input_px=2_000_000, landcover_px=300_000, gcn=True, classmap=True, buildings_px=2_500_000,
                     building_grid_px=2_000_000)
    weights = stage_weights(work, "cpu", "accurate")
    assert list(weights) == ["landcover", "classmap", "buildings", "vectorize", "write"]
    assert weights["landcover"] < 0.25 * weights["buildings"]

    def buildings(px: int) -> float:
        return stage_weights(StageWork(**{**work.__dict__, "buildings_px": px}), "cpu", "accurate")["buildings"]

    # in proportion to the building model's input pixels (beside reading the input)
    step = buildings(2_500_000) - buildings(0)
    assert step > 0 and buildings(5_000_000) - buildings(2_500_000) == pytest.approx(step)
    assert stage_weights(StageWork(**{**work.__dict__, "regularize": True}), "cpu", "accurate")["vectorize"] > \
        weights["vectorize"]
    assert tracing_share(StageWork(**{**work.__dict__, "regularize": True}), "cpu", "accurate") < \
        tracing_share(work, "cpu", "accurate") <= 1.0


def test_a_batch_weighs_an_input_by_its_work_at_the_working_gsd_not_by_its_pixels(data_root, tmp_path):
    """nairobi_z21_1 is nairobi_z19_1's ground at 4x the resolution: 16x the pixels, but the heads run
    at their cards' GSD, and it took less time than z19_1 in a batch, whose time left, by pixels, said
    58 s where 3 were."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.pipeline import PredictOptions, expected_seconds

    nairobi = data_root / "buildings" / "nairobi"
    for profile in ("accurate", "fast"):
        options = PredictOptions(profile=profile, device="cpu")
        z19, z21 = (expected_seconds(nairobi / f"nairobi_{z}_1.tif", options) for z in ("z19", "z21"))
        assert 1 < z21 / z19 < 6, (profile, z19, z21)
    with rasterio.open(nairobi / "nairobi_z19_1.tif") as src:  # a 64 px preview: mostly a run's fixed part
        profile = {**src.profile, "width": 64, "height": 64, "transform": src.window_transform(Window(0, 0, 64, 64))}
        with rasterio.open(tmp_path / "preview.tif", "w", **profile) as dst:
            dst.write(src.read(window=Window(0, 0, 64, 64)))
    options = PredictOptions(profile="fast", device="cpu")
    preview, z19 = (expected_seconds(p, options) for p in (tmp_path / "preview.tif", nairobi / "nairobi_z19_1.tif"))
    # measured with the models loaded: 0.36 s and 1.0 s (session 24); 0.19-0.35 s and 1.75 s (session 31, the
    # LiteUNet fast head), which the cost model gives as 0.31 s and 1.92 s
    assert z19 / preview < 10, (preview, z19)
    (tmp_path / "broken.tif").write_bytes(b"not a raster")
    assert expected_seconds(tmp_path / "broken.tif", PredictOptions()) is None
    assert expected_seconds("/vsicurl/https://example.invalid/a.tif", PredictOptions()) is None


#: z21/z19 of the same ground, measured: report.json's timings_s (total less load_models) of
#: nairobi_*_1 and zanzibar_*_2 in four batches of each profile in session 24 on the shared 2-core
#: box (`geoseg predict DIR --profile P`; docs/predict.md, the batch bar's time left): the lowest and
#: highest of those pairs. The cost model gave fast 3.85 / 3.98 and accurate 1.78 / 1.79 before.
MEASURED_Z21_OVER_Z19 = {"fast": (1.36, 3.62), "accurate": (1.07, 1.66)}


@pytest.mark.parametrize("profile", ["fast", "accurate"])
def test_a_0075_m_scene_weighs_against_its_ground_at_03_m_as_measured(data_root, profile):
    """A batch's time left weighed 0.075 m scenes 2x too heavy against 0.3 m ones: the class map,
    written at the input's resolution on a thread beside the building model, was counted on top of
    it, and the cut at nodata as a read of the bands (it reads the mask)."""
    from geoseg.pipeline import PredictOptions, expected_seconds

    options = PredictOptions(profile=profile, device="cpu")
    low, high = MEASURED_Z21_OVER_Z19[profile]
    buildings = data_root / "buildings"
    for city, k in (("nairobi", 1), ("zanzibar", 2)):
        z19, z21 = (expected_seconds(buildings / city / f"{city}_{z}_{k}.tif", options) for z in ("z19", "z21"))
        assert low <= z21 / z19 <= high, (city, k, z19, z21)


def test_an_all_valid_raster_is_not_weighed_for_the_cut_at_nodata(data_root, tmp_path):
    """geoseg.valid_area reads nothing of an integer raster whose mask says all valid; one with a
    nodata value has its mask read where buildings are. The weights follow the header."""
    import numpy as np
    import rasterio

    from geoseg.pipeline import PredictOptions, expected_seconds

    with rasterio.open(data_root / "buildings" / "nairobi" / "nairobi_z21_1.tif") as src:
        profile = {**src.profile, "compress": "deflate", "photometric": None}
        data = src.read()
    profile.pop("photometric")
    with rasterio.open(tmp_path / "plain.tif", "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(tmp_path / "nodata.tif", "w", **{**profile, "nodata": 0}) as dst:
        dst.write(np.where(data == 0, 1, data))
    options = PredictOptions(profile="accurate", device="cpu")  # fast: the class map beside hides the cut
    plain, nodata = expected_seconds(tmp_path / "plain.tif", options), expected_seconds(tmp_path / "nodata.tif", options)
    assert nodata - plain == pytest.approx(0.005 * 16.78 * 1.01, rel=0.01)  # the mask read of 16.8 Mpx
    from geoseg.pipeline import _nodata_cut  # what predict_scene's own weights are told

    assert not _nodata_cut(tmp_path / "plain.tif", (1, 2, 3)) and _nodata_cut(tmp_path / "nodata.tif", (1, 2, 3))


def test_an_ensembles_members_share_the_building_stage_by_their_cost(monkeypatch):
    """The accurate head's U2-Net took 86 % of the building stage's time on the CPU but filled half its bar:
    at 31 % a 4096 px scene's time left said 214 s where 134 s were left. Shares follow MEMBER_COSTS; an
    architecture without a measured cost gives equal shares."""
    from types import SimpleNamespace

    import geoseg.ensemble_heads as ensemble_heads
    from geoseg.progress import member_shares

    assert member_shares(["U2Net", "LiteUNet"], "cpu") == pytest.approx([13.4 / 15.7, 2.3 / 15.7])
    assert member_shares(["U2Net", "Mystery"], "cpu") == [0.5, 0.5] and member_shares([], "cpu") == []
    reported = []

    def fake_run_head(input_path, model, options, input_gsd, grid, work, progress, notes):
        progress(1.0)
        return SimpleNamespace(width=1, height=1, writer=None, tiles=1, tiles_skipped=0)

    monkeypatch.setattr(ensemble_heads, "run_head", fake_run_head)
    monkeypatch.setattr(ensemble_heads, "replace", lambda first, **kw: kw)
    models = [SimpleNamespace(card={"architecture": a}, runtime=r, device="cpu")
              for a, r in (("U2Net", "onnx"), ("LiteUNet", "onnx"))]
    ensemble_heads.run_mean_head("x.tif", models, None, None, {}, None, reported.append, [])
    assert reported == pytest.approx([13.4 / 15.7, 1.0])
    models[0].runtime = "int8"
    reported.clear()
    ensemble_heads.run_mean_head("x.tif", models, None, None, {}, None, reported.append, [])
    assert reported == pytest.approx([10.2 / 12.5, 1.0])
