"""``ProbabilityMean`` heads and their cards (``geoseg.models.ensemble``, ``geoseg.training.ensemble``)."""
import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from geoseg.card import ModelCardError, build_module, default_card_path, load_model, normalise
from geoseg.card import weights_sha256 as cards_sha
from geoseg.models.ensemble import ProbabilityMean
from geoseg.paths import data_root
from geoseg.training.ensemble import build_ensemble
from geoseg.training.ensemble import main as ensemble_main

U2NET = default_card_path("buildings", "accurate").with_name("buildings-u2net.json")
STUDENT = default_card_path("buildings", "fast")


@pytest.fixture(scope="module")
def kampala_crop() -> torch.Tensor:
    """A real 256 x 256 crop of a Kampala scene (uint8, 1 x 3 x H x W)."""
    with rasterio.open(data_root() / "buildings" / "kampala" / "kampala_z19_1.tif") as src:
        rgb = src.read((1, 2, 3), window=Window(256, 256, 256, 256))
    return torch.from_numpy(rgb)[None]


def test_the_output_is_the_log_of_the_members_mean_probability(kampala_crop):
    (u2net, card), (student, _) = load_model(U2NET), load_model(STUDENT)
    x = normalise(kampala_crop, card)
    with torch.no_grad():
        expected = (torch.softmax(u2net(x), 1) + torch.softmax(student(x), 1)) / 2
        out = ProbabilityMean([u2net, student]).eval()(x)
    assert torch.allclose(torch.softmax(out, 1), expected, atol=1e-5)
    assert torch.allclose(out.exp().sum(1), torch.ones(1, *out.shape[2:]), atol=1e-4)
    # the two networks disagree somewhere on a real scene, or the average would say nothing new
    assert (u2net(x).argmax(1) != student(x).argmax(1)).any()


def test_a_deeply_supervised_member_in_train_mode_gives_its_fused_output(kampala_crop):
    u2net, card = load_model(U2NET)
    x = normalise(kampala_crop[..., :64, :64], card)
    ensemble = ProbabilityMean([u2net, u2net])
    with torch.no_grad():
        eval_out = ensemble.eval()(x)
        train_out = ensemble.train()(x)  # U2-Net returns [fused, side1..6] in train mode
    assert train_out.shape == eval_out.shape == (1, 3, 64, 64)


def test_the_cli_writes_one_card_and_weights_that_load_back_to_the_same_head(tmp_path, kampala_crop):
    assert ensemble_main(["--out", str(tmp_path), "--name", "b-ens", str(U2NET), str(STUDENT)]) == 0
    card = json.loads((tmp_path / "b-ens.json").read_text())
    assert card["architecture"] == "ProbabilityMean" and card["weights"] == "b-ens.pt"
    assert [m["name"] for m in card["ensemble"]["members"]] == ["buildings-u2net", "buildings-u2net-fast"]
    assert card["window"] == json.loads(U2NET.read_text())["window"]  # the first member's tiling
    assert "postprocess" not in card  # a member's tuned rules do not fit the average: tuned afresh
    loaded, loaded_card = load_model(tmp_path)
    built, _ = build_ensemble([U2NET, STUDENT], "b-ens")
    x = normalise(kampala_crop, loaded_card)
    with torch.no_grad():
        assert torch.allclose(loaded(x), built.eval()(x), atol=2e-2)  # fp16 weights on disk
    # member 0's weights are the U2-Net's own (fp16 both)
    shipped = torch.load(U2NET.with_suffix(".pt"), weights_only=True)
    saved = torch.load(tmp_path / "b-ens.pt", weights_only=True)
    assert all(torch.equal(saved[f"members.0.{k}"], v) for k, v in shipped.items())


def test_members_that_read_or_predict_differently_are_refused(tmp_path, capsys):
    landcover = default_card_path("landcover", "accurate")
    with pytest.raises(ValueError, match="members disagree on 'task'"):
        build_ensemble([U2NET, landcover], "x")
    other = json.loads(STUDENT.read_text())
    other["normalisation"] = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (tmp_path / "buildings-u2net-fast.pt").symlink_to(STUDENT.with_suffix(".pt"))
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="members disagree on 'normalisation'"):
        build_ensemble([U2NET, tmp_path / "other.json"], "x")
    with pytest.raises(SystemExit) as exit_info:
        ensemble_main(["--out", str(tmp_path / "o"), "--name", "x", str(U2NET)])
    assert exit_info.value.code == 2 and "at least 2 member cards" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_ensemble_upsamples_no_further_than_its_most_cautious_member():
    """The members share one working grid, so the ensemble card carries the smallest ``max_upsampling``
    of its members' cards (it was dropped: an ensemble of 4x members ran at 2x)."""
    assert json.loads(STUDENT.read_text())["max_upsampling"] == 4
    assert build_ensemble([STUDENT, STUDENT], "s2")[1]["max_upsampling"] == 4
    assert "max_upsampling" not in build_ensemble([U2NET, STUDENT], "b-ens")[1]  # the U2-Net's 2x


def test_a_members_tiling_holds_only_tiling_keys(tmp_path):
    """A ``max_upsampling`` in one member's ``tiling`` put the members on different working grids: the
    run failed after the first member, blaming their GSDs. The card is now refused when it is read."""
    from geoseg.card import read_card

    shipped = default_card_path("buildings", "accurate")
    card = json.loads(shipped.read_text())
    card["arch_kwargs"]["members"][1]["tiling"]["max_upsampling"] = 4
    path = tmp_path / shipped.name
    path.write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="member 1's tiling may hold only window, tile_size, min_context, "
                                             "not max_upsampling"):
        read_card(path)
    assert read_card(shipped)["architecture"] == "ProbabilityMean"


def test_members_notes_are_told_once_of_the_ensemble_or_of_the_one_member_that_gave_them():
    from geoseg.ensemble_heads import members_notes

    said = ["input GSD 1 m is much coarser than the b-ens.member0 model's 0.3 m",
            "3 of the b-ens.member1 model's tiles hold valid pixels only in areas",
            "input GSD 1 m is much coarser than the b-ens.member1 model's 0.3 m"]
    assert members_notes(said, ["U2Net", "LiteUNet"]) == [
        "input GSD 1 m is much coarser than the b-ens model's 0.3 m",
        "3 of the b-ens (LiteUNet member) model's tiles hold valid pixels only in areas"]


def test_a_malformed_ensemble_card_is_a_card_error():
    with pytest.raises(ModelCardError, match="arch_kwargs.members"):
        build_module("ProbabilityMean", {"members": "u2net"})
    nested = {"architecture": "ProbabilityMean", "arch_kwargs": {"members": []}}
    with pytest.raises(ModelCardError, match="cannot be an ensemble"):
        build_module("ProbabilityMean", {"members": [nested, nested]})
    with pytest.raises(ValueError, match="at least 2 members"):
        ProbabilityMean([torch.nn.Identity()])


def test_the_floor_keeps_the_log_finite_where_every_member_is_certain():
    certain = torch.full((1, 3, 4, 4), -1e4)
    certain[:, 0] = 1e4
    out = ProbabilityMean([torch.nn.Identity(), torch.nn.Identity()])(certain)
    assert torch.isfinite(out).all() and np.isclose(out[0, 0, 0, 0].exp().item(), 1.0)


@pytest.fixture(scope="module")
def member_tiled(tmp_path_factory):
    """An ensemble of the shipped U2-Net (fixed 512 px windows) and fast student (its own tiles + 64 px
    context), written by the builder, and a real 640 x 576 px Kampala crop to run it on."""
    from test_predict_pipeline import crop

    folder = tmp_path_factory.mktemp("ens")
    assert ensemble_main(["--out", str(folder / "m"), "--name", "b-ens", str(U2NET), str(STUDENT)]) == 0
    scene = crop(data_root() / "buildings" / "kampala" / "kampala_z19_1.tif", folder / "k.tif",
                 Window(128, 64, 640, 576))
    return folder / "m" / "b-ens.json", scene


def source_grid(path) -> dict:
    """The input's own grid as ``run_head`` takes it (``predict_scene`` passes the same keys)."""
    from tiles.source import Scene

    with Scene(path) as s:
        return dict(crs=s.crs, transform=s.src_transform, width=s.src_width, height=s.src_height,
                    native_gsd=s.native_gsd)


def test_each_member_runs_on_its_own_tiles_and_the_stitched_maps_are_averaged(member_tiled, tmp_path):
    from geoseg.ensemble_heads import head_models, member_cards, run_mean_head
    from geoseg.infer import TileModel
    from geoseg.options import PredictOptions
    from geoseg.tiled_inference import run_head

    card_path, scene_path = member_tiled
    module, card = load_model(card_path)
    own = member_cards(card)
    assert [c.get("window") for c in own] == [{"size": 512, "overlap": 64}, None]
    assert [c.get("min_context", 0) for c in own] == [0, 64]
    # an int8 graph of the whole ensemble (as `quantize` would record it) is not a member's graph
    from geoseg.infer import int8_graph

    graph = card_path.with_name("b-ens.int8.onnx")
    graph.write_bytes(b"stand-in: never opened")
    whole = card | {"int8_onnx": {"file": graph.name, "weights_sha256": cards_sha(card)}}
    assert int8_graph(whole) == graph
    # ... but the U2-Net member keeps the U2-Net's own graph, which the builder copied beside the card
    u2net_graph = card_path.with_name(json.loads(U2NET.read_text())["int8_onnx"]["file"])
    assert u2net_graph.is_file() and u2net_graph.read_bytes() == (U2NET.parent / u2net_graph.name).read_bytes()
    assert [int8_graph(c) for c in member_cards(whole)] == [u2net_graph, None]
    assert [m.runtime for m in head_models(module, whole, "cpu", "int8")] == ["int8", "onnx"]
    options = PredictOptions(device="cpu", batch_size=2)
    grid = source_grid(scene_path)
    said: list[float] = []
    models = head_models(module, card, "cpu", "onnx")
    mean = run_mean_head(scene_path, models, options, None, grid, tmp_path, said.append, [])
    window = Window(0, 0, mean.width, mean.height)
    alone = []
    for path in (U2NET, STUDENT):  # each shipped model as predict runs it alone
        result = run_head(scene_path, TileModel(*load_model(path), runtime="onnx"), options, None, grid, tmp_path,
                          lambda f: None, [])
        alone.append(result.writer.read(window))
        result.writer.close()
    probs, covered = mean.writer.read(window)
    mean.writer.close()
    assert covered.all() and covered.shape == alone[0][1].shape
    np.testing.assert_allclose(probs, (alone[0][0] + alone[1][0]) / 2, atol=1e-4)
    assert mean.tiles > len([t for t in said if t == 0.0]) and said[-1] == pytest.approx(1.0)
    assert said == sorted(said)  # one bar over both members


def test_predict_runs_a_member_tiled_ensemble_and_reports_it(member_tiled, tmp_path):
    from geoseg.pipeline import PredictOptions, predict_scene

    card_path, scene_path = member_tiled
    report = predict_scene(scene_path, tmp_path / "out", PredictOptions(
        classmap=False, model_dirs={"buildings": str(card_path)}, runtime="onnx"))
    assert report["models"]["buildings"]["name"] == "b-ens"
    tiles = report["tiles"]["buildings"]
    assert [m["window_from_card"] for m in tiles["members"]] == [True, False]
    assert tiles["tiles"] == sum(m["tiles"] for m in tiles["members"])
    assert (tmp_path / "out" / "buildings.geojson").is_file()


def test_an_ensemble_tells_its_members_notes_once_under_its_own_name(member_tiled, tmp_path):
    """On a 1 m input each member warned "upsampled 2x only" itself, twice, naming members
    ("b-ens.member0") that no card holds: the run's notes now say it once, of the ensemble."""
    from test_predict_pipeline import crop

    from geoseg.ensemble_heads import head_models, run_mean_head
    from geoseg.options import PredictOptions

    card_path, _ = member_tiled
    small = crop(data_root() / "buildings" / "kampala" / "kampala_z19_1.tif", tmp_path / "s.tif",
                 Window(128, 64, 160, 160))
    module, card = load_model(card_path)
    grid = source_grid(small)
    notes: list[str] = []
    mean = run_mean_head(small, head_models(module, card, "cpu", "onnx"), PredictOptions(device="cpu", batch_size=1),
                         1.0, grid, tmp_path, lambda f: None, notes)
    mean.writer.close()
    coarse = [note for note in notes if "much coarser" in note]
    assert len(coarse) == 1 and "the b-ens model's 0.3 m: upsampled 2x only" in coarse[0], notes
    assert not any(".member" in note for note in notes), notes
