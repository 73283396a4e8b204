"""Student networks: output contract, size against the teachers, CPU speed against the teachers."""

import pytest
import torch

from geoseg.card import build_module
from geoseg.models.attresunet import AttResUNet
from geoseg.models.students import FastSegNet, conv_macs, student_arch_kwargs, student_for
from geoseg.models.u2net import U2Net
from checks import one_thread_cpu_seconds

torch.set_num_threads(2)


@pytest.mark.parametrize("size", [(128, 128), (97, 150)])
def test_student_output_contract(size):
    x = torch.rand(2, 3, *size)
    buildings = student_for("buildings", 3).eval()
    logits, feats = buildings.forward_with_features(x)
    assert logits.shape == (2, 3, *size)
    assert feats.shape[:2] == (2, buildings.feature_channels)
    assert feats.shape[2] == pytest.approx(size[0] / 4, abs=1)
    landcover = student_for("landcover", 6, ignore_first_class=True).eval()
    with torch.no_grad():
        lc = landcover(x)
    assert lc.shape == (2, 6, *size)
    assert not (lc.argmax(1) == 0).any()  # class 0 (unlabeled) is never predicted, as AttResUNet


def test_student_rebuilds_from_its_card_kwargs():
    student = student_for("landcover", 6, ignore_first_class=True).eval()
    clone = build_module("FastSegNet", student_arch_kwargs(student)).eval()
    clone.load_state_dict(student.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(student(x), clone(x))


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="n_classes"):
        FastSegNet(1)
    with pytest.raises(ValueError, match="task"):
        student_for("roads", 3)
    with pytest.raises(ValueError, match="B, C, H, W"):
        student_for("buildings", 3)(torch.rand(3, 64, 64))


@pytest.mark.parametrize(
    "task,teacher,n_classes",
    [("buildings", U2Net(), 3), ("landcover", AttResUNet(), 6)],
    ids=["buildings-u2net", "landcover-attresunet"],
)
def test_student_is_a_fraction_of_the_teacher_and_faster_on_cpu(task, teacher, n_classes):
    student = student_for(task, n_classes, ignore_first_class=task == "landcover").eval()
    teacher.eval()
    x = torch.rand(1, 3, 128, 128)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(student) * 3 <= params(teacher)
    assert conv_macs(student, x) * 10 <= conv_macs(teacher, x)

    t_student, t_teacher = one_thread_cpu_seconds([student, teacher], x, [3, 1])
    assert t_teacher >= 3 * t_student, (t_teacher, t_student)


def test_distillation_modules_import_without_rasterio_typer_fastapi():
    """The GPU machine has torch and numpy but no rasterio/typer/fastapi: the modules must import there."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('rasterio', 'typer', 'fastapi', 'geopandas', 'rich'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import geoseg.training.distill, geoseg.training.ablation, geoseg.distill_losses, geoseg.models.students\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_student_runs_in_onnx_runtime_like_in_torch():
    """The CPU pipeline runs heads through ONNX Runtime: the student must export with dynamic sizes."""
    import io
    import warnings

    import numpy as np
    import onnxruntime as ort

    student = student_for("landcover", 6, ignore_first_class=True).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(student, (torch.zeros(1, 3, 64, 64),), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 90, 72)
    with torch.no_grad():
        expected = student(x).numpy()
    got = session.run(None, {"x": x.numpy()})[0]
    assert got.shape == (2, 6, 90, 72)
    assert np.abs(got - expected).max() < 1e-3
