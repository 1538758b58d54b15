"""inpaint.onnx (the fused inpainting graph): equal to the stepwise Python inpainting, shared weights, manifest,
validation at export, the pipeline's choice of path, and ``ncsn-sample --inpaint/--mask`` with its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from host_exports import TOLERANCE, build_export, tiny_conv_spec
from ncsn_runtime import NCSNPipeline
from ncsn_runtime.cli import main as sample_main
from ncsn_runtime.errors import ExportDirectoryError
from ncsn_runtime.verify import sha256_file
from PIL import Image

from ncsn_export.exporters import export_model
from ncsn_export.exporters.shared_weights import external_tensors


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    return build_export("tiny-conv")


@pytest.fixture(scope="module")
def conv(conv_dir: Path) -> NCSNPipeline:
    return NCSNPipeline.from_pretrained(conv_dir, provider="cpu")


def _box_mask(batch: int = 1) -> np.ndarray:
    mask = np.ones((batch, 1, 8, 8), np.float32)
    mask[..., 2:6, 3:8] = 0.0  # an off-centre box to fill
    return mask


@pytest.mark.parametrize(("batch", "steps", "seed"), [(1, None, 0), (3, None, 7), (2, 2, 2**40)])
def test_fused_equals_stepwise_on_images(conv: NCSNPipeline, batch, steps, seed):
    image = np.random.default_rng(seed % 97).uniform(0, 1, (batch, 1, 8, 8)).astype(np.float32)
    mask = _box_mask(batch)
    mask[-1, ..., :, :2] = 0.0  # a different mask per sample
    runs = {}
    for mode in ("fused", "stepwise"):
        runs[mode] = conv.inpaint(image, mask, seed=seed, num_inference_steps=steps, output_type="raw", progress=False,
                                  mode=mode).images
        assert conv.last_run.mode == f"{mode} (inpaint)"
    diff = float(np.abs(runs["fused"] - runs["stepwise"]).max())
    print(f"tiny-conv B={batch}: max |fused - stepwise| = {diff:.3e}")
    assert diff <= TOLERANCE
    known = mask.astype(bool)
    np.testing.assert_array_equal(runs["fused"][known], image[known])  # the known region is the image itself
    assert np.abs(runs["fused"][~known] - image[~known]).max() > 0.05  # and the rest is filled in


def test_fused_equals_stepwise_on_the_toy_mixture():
    toy = NCSNPipeline.from_pretrained(build_export("toy-gmm"), provider="cpu")
    image = np.array([[-5.0, 0.0]] * 16 + [[5.0, 0.0]] * 16, np.float32)
    fused = toy.inpaint(image, np.array([1.0, 0.0]), seed=3, progress=False, mode="fused").images
    stepwise = toy.inpaint(image, np.array([1.0, 0.0]), seed=3, progress=False, mode="stepwise").images
    assert np.abs(fused - stepwise).max() <= TOLERANCE
    assert abs(fused[:16, 1].mean() + 5) < 1.0 and abs(fused[16:, 1].mean() - 5) < 1.0  # the known x picks the mode


def test_the_graph_shares_the_weights_and_is_listed(conv_dir: Path):
    manifest = json.loads((conv_dir / "manifest.json").read_text())
    entry = manifest["graphs"]["inpaint"]
    assert entry["file"] == "inpaint.onnx" and entry["external_data"] == ["weights.onnx.data"]
    assert [tensor["name"] for tensor in entry["inputs"]] == ["sample", "seed", "timesteps", "step_sizes",
                                                              "num_annealed_steps", "sigmas", "known", "mask"]
    assert entry["inputs"][-1]["shape"] == ["batch", 1, 8, 8] and entry["outputs"][0]["name"] == "final_sample"
    assert manifest["files"]["inpaint.onnx"]["sha256"] == sha256_file(conv_dir / "inpaint.onnx")

    def references(name: str) -> set[tuple[str, ...]]:
        model = onnx.load(str(conv_dir / name), load_external_data=False)
        return {tuple(f"{e.key}={e.value}" for e in t.external_data if e.key != "location") for t in external_tensors(model)}

    assert references("inpaint.onnx") and references("inpaint.onnx") == references("sampler.onnx")  # same offsets, one file
    assert (conv_dir / "inpaint.onnx").stat().st_size < 0.5 * (conv_dir / "weights.onnx.data").stat().st_size + 200_000


def test_validated_at_export(tmp_path: Path):
    report = export_model(tiny_conv_spec(), tmp_path / "out", full_batch_size=0)
    rows = [row for row in report.manifest["validation"] if row["graph"] == "inpaint"]
    assert len(rows) == 1 and rows[0]["passed"] and rows[0]["reference"].startswith("torch eager inpaint")
    assert report.manifest["artifacts"]["inpaint"] == {"file": "inpaint.onnx", "status": "written", "validated": True}


def test_an_export_without_the_graph_inpaints_stepwise(tmp_path: Path):
    export_model(tiny_conv_spec(), tmp_path / "old", validate=False, artifacts="score,step,sampler")
    pipe = NCSNPipeline.from_pretrained(tmp_path / "old", provider="cpu")
    image = np.full((1, 8, 8), 0.5, np.float32)
    out = pipe.inpaint(image, _box_mask(), seed=1, output_type="raw", progress=False).images
    assert pipe.last_run.mode == "stepwise (inpaint)"
    with pytest.raises(ExportDirectoryError, match=r"mode=.fused. needs inpaint\.onnx"):
        pipe.inpaint(image, _box_mask(), seed=1, progress=False, mode="fused")
    full = NCSNPipeline.from_pretrained(build_export("tiny-conv"), provider="cpu")
    assert np.abs(full.inpaint(image, _box_mask(), seed=1, output_type="raw", progress=False).images - out).max() <= TOLERANCE


def test_a_callback_means_stepwise(conv: NCSNPipeline):
    calls = []
    conv.inpaint(np.zeros((1, 8, 8)), _box_mask(), seed=0, progress=False,
                 callback_on_step_end=lambda pipe, step, level, kwargs: calls.append(level))
    assert conv.last_run.mode == "stepwise (inpaint)" and len(calls) == 4 * 3
    with pytest.raises(ValueError, match="needs stepwise inpainting"):
        conv.inpaint(np.zeros((1, 8, 8)), _box_mask(), seed=0, progress=False, mode="fused",
                     callback_on_step_end=lambda *args: None)
    with pytest.raises(ValueError, match=r"`mode` must be one of"):
        conv.inpaint(np.zeros((1, 8, 8)), _box_mask(), seed=0, progress=False, mode="loop")


def test_inpaint_is_not_a_sampling_graph(conv: NCSNPipeline):
    with pytest.raises(ValueError, match=r"runs through pipe\.inpaint"):
        conv(batch_size=1, graph="inpaint", progress=False)


# -- ncsn-sample --inpaint IMAGE --mask MASK -------------------------------------------------------------------------

def _png(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(path)
    return path


@pytest.fixture()
def digit_png(tmp_path: Path) -> Path:
    return _png(tmp_path / "digit.png", np.random.default_rng(0).integers(0, 256, (8, 8)))


@pytest.fixture()
def mask_png(tmp_path: Path) -> Path:
    return _png(tmp_path / "mask.png", _box_mask()[0, 0] * 255)


@pytest.mark.parametrize("mode", ["auto", "stepwise"])
def test_cli_inpaints_a_png(conv_dir: Path, conv: NCSNPipeline, digit_png: Path, mask_png: Path, tmp_path: Path, capsys,
                            mode):
    output = tmp_path / "filled.npy"
    code = sample_main([str(conv_dir), "--inpaint", str(digit_png), "--mask", str(mask_png), "--seed", "5", "-n", "3",
                        "--batch-size", "2", "--mode", mode, "-o", str(output), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert ("graph inpaint (inpaint.onnx (fused Loop)), mode fused (inpaint)" in out) == (mode == "auto")
    assert "inpainting" in out and (mode != "stepwise" or "mode stepwise (inpaint)" in out)
    image = np.asarray(Image.open(digit_png), np.float32)[None] / 255.0
    expected = conv.inpaint(image, _box_mask()[0], seed=5, batch_size=3, output_type="raw", progress=False,
                            mode="stepwise").images
    assert np.abs(np.load(output) - expected).max() <= TOLERANCE
    png = tmp_path / "filled.png"
    assert sample_main([str(conv_dir), "--inpaint", str(digit_png), "--mask", str(mask_png), "-n", "4", "-o", str(png),
                        "--no-progress"]) == 0
    assert Image.open(png).size[0] > 8 * 2


@pytest.mark.parametrize(("image_pixels", "mask_pixels", "extra", "message"), [
    (np.zeros((9, 8)), None, [], r"--inpaint digit.png is 9x8 \(HxW\); this export's samples are 8x8 \(HxW\)"),
    (None, np.zeros((8, 7)), [], r"--mask mask.png is 8x7 \(HxW\); this export's samples are 8x8"),
    (None, np.full((8, 8), 128), [], r"--mask mask.png must be black \(0, fill in\) and white \(255, known\) only, got 64 gray "
                                     r"pixels in \[128, 128\]"),
    (None, np.full((8, 8), 255), [], "--mask mask.png: the mask is all 1 .*nothing to fill in"),
    (None, np.zeros((8, 8)), [], "--mask mask.png: the mask is all 0 .*plain sampling"),
    (None, None, ["--trajectory", "t.png"], "--trajectory draws sampling, not inpainting"),
    (None, None, ["--graph", "sampler"], "drop --graph"),
])
def test_cli_bad_inpaint_input(conv_dir: Path, digit_png: Path, mask_png: Path, tmp_path: Path, capsys, image_pixels,
                               mask_pixels, extra, message):
    if image_pixels is not None:
        _png(digit_png, image_pixels)
    if mask_pixels is not None:
        _png(mask_png, mask_pixels)
    output = tmp_path / "out.png"
    code = sample_main([str(conv_dir), "--inpaint", str(digit_png), "--mask", str(mask_png), "-o", str(output), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not output.exists()


def test_cli_mask_npy_and_missing_mask(conv_dir: Path, digit_png: Path, tmp_path: Path, capsys):
    np.save(tmp_path / "mask.npy", np.where(_box_mask()[0, 0] > 0, 1.0, 0.25))
    code = sample_main([str(conv_dir), "--inpaint", str(digit_png), "--mask", str(tmp_path / "mask.npy"), "-o",
                        str(tmp_path / "o.png")])
    assert code == 2 and "only 0 and 1" in capsys.readouterr().err
    np.save(tmp_path / "mask.npy", _box_mask()[0, 0] > 0)  # bool [H, W]
    assert sample_main([str(conv_dir), "--inpaint", str(digit_png), "--mask", str(tmp_path / "mask.npy"), "-n", "1", "-o",
                        str(tmp_path / "o.npy"), "--no-progress"]) == 0
    assert sample_main([str(conv_dir), "--inpaint", str(digit_png), "-o", str(tmp_path / "o.png")]) == 2
    assert "--inpaint IMAGE and --mask MASK go together" in capsys.readouterr().err
