"""Grad-CAM from a run's float model: `python -m training explain`, and the per-source sheets
of a run's hardest mistakes.

The run folder is the tiny config's network (MobileNetV2 0.35, from scratch) at 96x128, its
weights saved the way a run saves them; untrained weights are enough to check the plumbing: the
overlay has the photo's size and the map is not constant.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.__main__ import main
from training.config import load_config
from training.data import Dataset, Item
from wastesort.manifest import InputSpec

LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.model import assemble, backbone_for, build_head

    cfg = load_config("training/configs/tiny.yaml", ["input.height=96", "input.width=128"])
    backbone = backbone_for(cfg)
    model = assemble(
        backbone, build_head(backbone.output_shape[-1], len(LABELS), 0.2), tta_flip=False
    )
    folder = tmp_path_factory.mktemp("run")
    model.save_weights(folder / "model.weights.h5")
    (folder / "config.json").write_text(json.dumps(cfg.dump()))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (folder / "summary.json").write_text(json.dumps({"test": {"keras": {"temperature": 0.5}}}))
    return folder


@pytest.fixture(scope="module")
def run(run_dir: Path):
    from training.explain import load_run

    return load_run(run_dir)


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A bright sheet with a dark textured object off centre."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), 225, np.uint8)
    pixels[height // 5 : height // 2, width // 2 : width - width // 6] = rng.integers(
        0, 120, (height // 2 - height // 5, width - width // 6 - width // 2, 3)
    )
    return pixels


def test_the_command_writes_an_overlay_at_the_photos_size(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    paths = []
    for k, (w, h) in enumerate(((203, 151), (90, 160))):
        paths.append(tmp_path / f"photo{k}.jpg")
        Image.fromarray(photo(w, h, k)).save(paths[-1], quality=92)
    out = tmp_path / "out"
    assert main(["explain", "--run", str(run_dir), *map(str, paths), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(label in printed[0] for label in ("->", "_gradcam.png"))
    for path, size in zip(paths, ((203, 151), (90, 160)), strict=True):
        with Image.open(out / f"{path.stem}_gradcam.png") as overlay:
            assert overlay.size == size


def test_the_map_is_not_constant_and_the_scores_are_calibrated(run, tmp_path: Path):
    from training.explain import explain_files

    path = tmp_path / "photo.png"
    Image.fromarray(photo(160, 120)).save(path)
    (done,) = explain_files(run, [path], tmp_path / "out", top=6)
    assert done.cam.shape == (120, 160)
    assert done.cam.min() >= 0 and done.cam.max() <= 1 and done.cam.std() > 0.01
    assert run.temperature == 0.5 and len(done.top) == 6
    assert sum(score for _, score in done.top) == pytest.approx(1, abs=1e-4)
    assert [s for _, s in done.top] == sorted((s for _, s in done.top), reverse=True)


def test_a_mirrored_model_is_explained_through_both_views(run):
    from training.explain import gradcam, parts
    from training.model import assemble

    p = parts(run.model)
    tta = assemble(p.backbone, p.head, tta_flip=True)
    assert parts(tta).tta_flip and not p.tta_flip
    pixels = photo(128, 96)[None].astype(np.float32)
    logits, cams = gradcam(tta, pixels)
    assert np.allclose(logits, tta.predict(pixels, verbose=0), atol=1e-4)
    assert cams.shape[1:] == p.backbone.output.shape[1:3] and cams.std() > 0


def test_the_map_follows_the_resize_rule_back_onto_the_photo():
    from training.explain import on_photo

    cam = np.zeros((4, 4), np.float32)
    cam[:, 3] = 1  # the input's right edge
    squash = on_photo(cam, (200, 100), InputSpec(height=64, width=64, resize="squash"))
    crop = on_photo(cam, (200, 100), InputSpec(height=64, width=64, resize="center_crop"))
    inner = np.zeros((4, 4), np.float32)
    inner[:, 2] = 1  # a tall photo fills input columns 16-48 of 64: this is its right half
    box = on_photo(inner, (100, 200), InputSpec(height=64, width=64, resize="letterbox"))
    assert squash.shape == crop.shape == (100, 200) and box.shape == (200, 100)
    assert squash[:, -1].mean() > 0.9
    assert crop[:, -1].max() == 0 and crop[:, 140:150].mean() > 0.5  # outside the crop: unseen
    assert box[:, 70:].mean() > box[:, :30].mean() + 0.4


@pytest.mark.parametrize("what", ["no weights", "no folder", "bad config"])
def test_a_run_without_a_float_model_is_a_one_line_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
):
    image = tmp_path / "photo.jpg"
    Image.fromarray(photo(64, 48)).save(image)
    folder = tmp_path / "run"
    if what != "no folder":
        folder.mkdir()
        (folder / "config.json").write_text((run_dir / "config.json").read_text())
    if what == "bad config":
        for name in ("model.weights.h5", "labels.txt"):
            (folder / name).write_bytes((run_dir / name).read_bytes())
        (folder / "config.json").write_text('{"input": {"height": 5}}')
    assert main(["explain", "--run", str(folder), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    expected = "cannot rebuild" if what == "bad config" else "float model"
    assert err.startswith("error:") and expected in err and "\n" not in err


def test_an_unreadable_photo_is_a_one_line_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff this is not a photo")
    for path in (broken, tmp_path / "missing.jpg"):
        assert main(["explain", "--run", str(run_dir), str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {path}") and "\n" not in err
    assert main(["explain", "--run", str(run_dir), "--top", "0", str(broken)]) == 2
    assert capsys.readouterr().err.startswith("error: --top 0")
    assert not (run_dir / "explain").exists()  # refused before any overlay


def test_weights_that_do_not_fit_the_config_are_refused(run_dir: Path, tmp_path: Path):
    from training.explain import ExplainError, load_run

    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("model.weights.h5", "labels.txt"):
        (folder / name).write_bytes((run_dir / name).read_bytes())
    recorded = json.loads((run_dir / "config.json").read_text())
    recorded["model"]["alpha"] = 0.5
    (folder / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(ExplainError, match="does not fit"):
        load_run(folder)


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def test_the_report_has_a_mistakes_sheet_per_source_with_gradcam(run, tmp_path: Path):
    from types import SimpleNamespace

    from training import plots, report

    items = [
        Item(f"{LABELS[k % 6]}/t{k}.jpg", LABELS[k % 6], f"{k:064x}", "studio") for k in range(6)
    ]
    items += [
        Item(f"{LABELS[k % 6]}/f{k}.jpg", LABELS[k % 6], f"{k + 6:064x}", "floor") for k in range(4)
    ]
    items += [
        Item(f"unmapped/food{k}.jpg", "food", f"{k + 10:064x}", "floor", in_scope=False)
        for k in range(3)
    ]
    ds = Dataset(
        roots={"studio": tmp_path, "floor": tmp_path},
        labels=LABELS,
        items=items,
        split={"test": list(range(6)), "eval": list(range(6, 10)), "unmapped": [10, 11, 12]},
        fingerprint="x",
        roles={"studio": "train", "floor": "eval"},
    )
    pixels = np.stack([photo(128, 96, k) for k in range(13)])
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6), 13)
    int8 = SimpleNamespace(test_probs=probs[:6], extra_probs=probs[6:])
    sheets = plots.source_mistakes(
        tmp_path / "plots", int8=int8, ds=ds, pixels=pixels, model=run.model
    )
    assert set(sheets) == {"studio", "floor", "floor/unmapped"}
    for s in sheets.values():
        assert (tmp_path / "plots" / s["sheet"]).is_file()
    assert sheets["floor/unmapped"]["gradcam"] and len(sheets["floor/unmapped"]["mistakes"]) == 3
    assert sheets["floor/unmapped"]["mistakes"][0]["true"] == "none of the classes"
    plain = plots.source_mistakes(tmp_path / "plain", int8=int8, ds=ds, pixels=pixels)
    assert not any(s["gradcam"] for s in plain.values())
    lines = report.source_sheet_lines(sheets)
    assert any("floor/unmapped" in line and "with Grad-CAM" in line for line in lines)


@pytest.mark.slow
def test_a_lite_run_with_stochastic_depth_and_mirroring_is_rebuilt_and_explained(tmp_path: Path):
    """The default config's backbone (untrained here), as a run saves and explain rebuilds it."""
    from training.explain import gradcam, load_run
    from training.model import assemble, backbone_for, build_head

    cfg = load_config(
        "training/configs/default.yaml",
        ["input.height=96", "input.width=96", "model.tta_flip=true", "model.weights=null"],
    )
    backbone = backbone_for(cfg)
    head = build_head(backbone.output_shape[-1], len(LABELS), 0.2)
    model = assemble(backbone, head, tta_flip=True)
    model.save_weights(tmp_path / "model.weights.h5")
    (tmp_path / "config.json").write_text(json.dumps(cfg.dump()))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    run = load_run(tmp_path)
    pixels = photo(96, 96)[None].astype(np.float32)
    logits, cams = gradcam(run.model, pixels)
    assert np.allclose(logits, model.predict(pixels, verbose=0), atol=1e-4)
    assert cams.shape == (1, 3, 3) and cams.std() > 0
