"""mnd.experiments.grid: presets, the cached and resumable grid, reading and summarising results.

The grid tests use a tiny seeded CNN registered under a test name (32x32
inputs), so a whole grid runs in seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from mnd import data, experiments, models
from mnd.core.pixels import quantize
from mnd.data import faces
from mnd.experiments import grid, trace
from mnd.cli.main import main
from mnd.errors import InputError, ModelUnavailableError

TEST_MODEL = "test_tiny_cnn"


class TinyCNN(nn.Module):
    """Ten classes over 3x32x32 images; random but seeded weights (another seed, another model)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1))


def tiny_spec() -> models.ModelSpec:
    return models.ModelSpec(name=TEST_MODEL, task="imagenet", input_size=32, resize=36, offline=True,
                            embedding=False, builder=TinyCNN, weights_hint="test")


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(models.REGISTRY, TEST_MODEL, tiny_spec())
    return TEST_MODEL


def write_preset(folder: Path, *, methods: str = '["bim", "no_norm"]', extra: str = "") -> Path:
    path = folder / "mini.toml"
    path.write_text(textwrap.dedent(f"""
        name = "mini"
        description = "test"
        seed = 0
        batch_size = 1
        max_iter = 30
        settings = ["non-targeted", "targeted"]
        methods = {methods}
        {extra}
        [datasets.photos]
        source = "embedded"
        images = ["chelsea", "coffee"]
        model = "{TEST_MODEL}"
        task = "imagenet"
        paper_tables = {{ non-targeted = "I", targeted = "II" }}
        """))
    return path


def table(results: Path) -> list[dict[str, str]]:
    """results.csv without the wall-time column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in experiments.read_rows(results / experiments.RESULTS_CSV)]



pytestmark = pytest.mark.usefixtures("one_thread")

# --- presets -------------------------------------------------------------------------------


def test_packaged_presets_load() -> None:
    assert {"embedded", "paper", "tiny"} <= set(experiments.preset_names())
    embedded = experiments.load_preset("embedded")
    assert embedded.names == ["imagenet", "faces"]
    assert embedded.device == "cpu"
    assert [d.model for d in embedded.datasets] == ["efficientnet_lite0", "dlib_resnet_v1"]
    tiny = experiments.load_preset("tiny")
    assert all(len(experiments.image_names(d)) == 2 for d in tiny.datasets)


def test_paper_preset_needs_the_data_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MND_IMAGENET_ROOT", raising=False)
    monkeypatch.delenv("MND_VGGFACE2_ROOT", raising=False)
    with pytest.raises(InputError, match="imagenet_root"):
        experiments.load_preset("paper")
    preset = experiments.load_preset("paper", [f"imagenet_root={tmp_path}", f"vggface2_root={tmp_path}"])
    assert preset.dataset("imagenet").root == str(tmp_path)
    assert preset.dataset("faces").root == str(tmp_path)
    assert preset.device == "cuda" and preset.effective_max_iter() == 1000
    monkeypatch.setenv("MND_IMAGENET_ROOT", str(tmp_path / "in"))
    monkeypatch.setenv("MND_VGGFACE2_ROOT", str(tmp_path / "vgg"))
    assert experiments.load_preset("paper").dataset("imagenet").root == str(tmp_path / "in")


def test_overrides_and_user_presets(tmp_path: Path, tiny_model: str) -> None:
    path = write_preset(tmp_path)
    preset = experiments.load_preset(str(path), ["max_iter=7", "datasets.photos.limit=1", 'methods=["mnd"]'])
    assert preset.max_iter == 7 and preset.effective_max_iter() == 7
    assert preset.methods == ("mnd",)
    assert experiments.image_names(preset.dataset("photos")) == ["chelsea"]
    assert preset.overrides == ("max_iter=7", "datasets.photos.limit=1", 'methods=["mnd"]')
    with pytest.raises(InputError, match="unknown key"):
        experiments.load_preset(str(path), ["colour=blue"])
    with pytest.raises(InputError, match="KEY=VALUE"):
        experiments.load_preset(str(path), ["max_iter"])
    with pytest.raises(InputError, match="unknown method"):
        experiments.load_preset(str(path), ['methods=["fgsm"]'])
    with pytest.raises(InputError, match="unknown preset"):
        experiments.load_preset("no-such-preset")
    (tmp_path / "bad.toml").write_text("name = [")
    with pytest.raises(InputError, match="TOML"):
        experiments.load_preset(tmp_path / "bad.toml")


# --- the grid ---------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_cache_resume_and_same_table(tmp_path: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    preset = experiments.load_preset(write_preset(tmp_path))
    stopped, fresh = tmp_path / "stopped", tmp_path / "fresh"

    def stop(done: experiments.BatchDone) -> None:
        raise Interrupt(done)

    with pytest.raises(Interrupt):
        experiments.run_grid(preset, stopped, progress=False, on_batch=stop)
    first = table(stopped)
    assert len(first) == 1  # the first batch (one image) was written before the interruption
    assert experiments.png_path(stopped, "photos", first[0]["setting"], first[0]["method"], first[0]["image"]).exists()

    resumed = experiments.run_grid(preset, stopped, progress=False)
    assert resumed.computed == 7 and resumed.reused == 1
    experiments.run_grid(preset, fresh, progress=False)
    assert table(stopped) == table(fresh)
    assert len(table(fresh)) == 8  # 2 images x 2 methods x 2 settings
    for row in table(fresh):
        assert experiments.png_path(fresh, "photos", row["setting"], row["method"], row["image"]).exists()
        assert experiments.clean_path(fresh, "photos", row["image"]).exists()
    assert set(table(fresh)[0]) == set(experiments.GRID_COLUMNS) - {"seconds"}

    # a second run finds everything on disk: no attack is run at all
    calls = []
    real = experiments.run_method
    monkeypatch.setattr(grid, "run_method", lambda *a, **k: calls.append(a) or real(*a, **k))
    stamps = {p: p.stat().st_mtime_ns for p in fresh.rglob("*.png")}
    again = experiments.run_grid(preset, fresh, progress=False)
    assert calls == [] and again.computed == 0 and again.reused == 8
    assert {p: p.stat().st_mtime_ns for p in fresh.rglob("*.png")} == stamps
    run = experiments.read_run(fresh)
    assert len(run["history"]) == 2 and run["versions"]["torch"] != "not installed"
    assert run["datasets"]["photos"]["status"] == "ok"

    # a missing PNG, or another iteration cap, is recomputed
    experiments.png_path(fresh, "photos", "targeted", "no_norm", "coffee").unlink()
    assert experiments.run_grid(preset, fresh, progress=False).computed == 1
    capped = experiments.load_preset(write_preset(tmp_path), ["max_iter=31"])
    assert experiments.run_grid(capped, fresh, progress=False).computed == 4  # no_norm only: bim has no cap


def test_failed_batches_are_recorded_and_retried(tmp_path: Path, tiny_model: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    preset = experiments.load_preset(write_preset(tmp_path), ['settings=["non-targeted"]'])
    real = experiments.run_method

    def broken(model, x, labels, method, **kw):  # type: ignore[no-untyped-def]
        if method == "no_norm":
            raise RuntimeError("boom")
        return real(model, x, labels, method, **kw)

    monkeypatch.setattr(grid, "run_method", broken)
    report = experiments.run_grid(preset, tmp_path / "r", progress=False)
    assert report.failed == 2
    rows = experiments.read_results(tmp_path / "r")
    bad = [r for r in rows if r["method"] == "no_norm"]
    assert all(not r["success"] and math.isnan(r["psnr"]) and "boom" in r["note"] for r in bad)
    with pytest.raises(RuntimeError, match="boom"):
        experiments.run_grid(preset, tmp_path / "r", progress=False, errors="raise")
    monkeypatch.setattr(grid, "run_method", real)
    assert experiments.run_grid(preset, tmp_path / "r", progress=False).computed == 2


def test_unavailable_dataset_is_skipped_with_its_reason(tmp_path: Path, tiny_model: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    preset = experiments.load_preset(write_preset(tmp_path))

    def missing(*a, **k):  # type: ignore[no-untyped-def]
        raise ModelUnavailableError("weights not here")

    monkeypatch.setattr(grid, "open_dataset", missing)
    report = experiments.run_grid(preset, tmp_path / "r", progress=False)
    assert report.datasets["photos"] == {"status": "skipped", "reason": "ModelUnavailableError: weights not here"}
    assert experiments.read_run(tmp_path / "r")["datasets"]["photos"]["status"] == "skipped"


# --- reading back and summarising -------------------------------------------------------------


def _row(method: str, image: str, success: bool, psnr: float, ssim: float, setting: str = "non-targeted") -> dict:
    return {"dataset": "photos", "setting": setting, "method": method, "image": image, "success": success,
            "attacked": True, "psnr": psnr, "ssim": ssim, "iterations": 10, "changed_ratio": 0.5, "seconds": 1.0}


def test_summarize_gives_means_over_all_attacked_and_over_successes(tmp_path: Path, tiny_model: str) -> None:
    preset = experiments.load_preset(write_preset(tmp_path))
    rows = [_row("mnd", "a", True, 50.0, 0.99), _row("mnd", "b", True, 40.0, 0.97), _row("mnd", "c", False, 30.0, 0.9),
            _row("bim", "a", True, 34.0, 0.9)]
    rows[2]["changed_ratio"], rows[2]["iterations"] = 0.8, 30
    summary = experiments.summarize(rows, preset)
    assert [s["method"] for s in summary] == ["bim", "mnd"]  # the paper's row order
    mnd = summary[1]
    assert (mnd["attacked"], mnd["succeeded"], mnd["measured"]) == (3, 2, 3)
    assert mnd["success_rate"] == pytest.approx(2 / 3)
    # all attacked images, the failed one included
    assert mnd["psnr_all_mean"] == pytest.approx(40.0) and mnd["psnr_all_std"] == pytest.approx(10.0)
    assert mnd["ssim_all_mean"] == pytest.approx((0.99 + 0.97 + 0.9) / 3)
    assert mnd["changed_ratio_all_mean"] == pytest.approx(0.6) and mnd["iterations_all_mean"] == pytest.approx(50 / 3)
    # the successful attacks only
    assert mnd["psnr_success_mean"] == pytest.approx(45.0) and mnd["psnr_success_std"] == pytest.approx(math.sqrt(50.0))
    assert mnd["changed_ratio_success_mean"] == pytest.approx(0.5) and mnd["iterations_success_mean"] == 10
    assert mnd["paper_table"] == "I" and mnd["paper_psnr_mean"] == pytest.approx(48.55)
    assert math.isnan(summary[0]["psnr_all_std"]) and math.isnan(summary[0]["psnr_success_std"])  # one image: no std
    assert set(experiments.OVER.values()) == {"all attacked", "successes"}


def test_summarize_keeps_unchanged_images_and_leaves_out_attacks_that_raised(tmp_path: Path, tiny_model: str) -> None:
    rows = [_row("mnd", "a", False, math.inf, 1.0), _row("mnd", "b", True, 40.0, 0.97),
            _row("mnd", "c", False, math.nan, math.nan)]
    (mnd,) = experiments.summarize(rows)
    assert (mnd["attacked"], mnd["measured"]) == (3, 2)
    assert math.isinf(mnd["psnr_all_mean"]) and math.isnan(mnd["psnr_all_std"])  # an unchanged image: PSNR inf
    assert mnd["psnr_success_mean"] == pytest.approx(40.0) and mnd["ssim_all_mean"] == pytest.approx(0.985)


def test_differences_from_the_paper_only_for_the_papers_model_and_data(tmp_path: Path, tiny_model: str) -> None:
    rows = [_row("mnd", "a", True, 50.0, 0.99), _row("mnd", "b", False, 40.0, 0.97)]
    other = experiments.load_preset(write_preset(tmp_path))
    (mine,) = experiments.summarize(rows, other)
    assert not mine["same_as_paper"] and math.isnan(mine["psnr_all_diff"]) and math.isnan(mine["ssim_all_diff"])
    assert mine["paper_psnr_mean"] == pytest.approx(48.55)  # the paper's value is still there, for reference
    paper = tmp_path / "paper.toml"
    paper.write_text(textwrap.dedent(f"""
        name = "like-the-paper"
        methods = ["mnd"]
        [datasets.photos]
        source = "imagenet10"
        root = "{tmp_path}"
        model = "vgg19"
        paper_tables = {{ non-targeted = "I", targeted = "II" }}
        """))
    same = experiments.load_preset(paper)
    (theirs,) = experiments.summarize(rows, same)
    assert theirs["same_as_paper"] and theirs["psnr_all_diff"] == pytest.approx(45.0 - 48.55)
    assert theirs["ssim_all_diff"] == pytest.approx(0.98 - 0.9925)
    spec = same.dataset("photos")
    assert spec.same_as_paper("targeted")
    # the decision comes from the model and the source, never from the preset's name
    for change in ({"model": "efficientnet_lite0"}, {"source": "folder"}, {"limit": 10},
                   {"paper_tables": (("non-targeted", "VI"),)}):
        assert not dataclasses.replace(spec, **change).same_as_paper("non-targeted"), change
    packaged = {name: experiments.load_preset(name, [f"{k}_root={tmp_path}" for k in ("imagenet", "vggface2")]
                                       if name == "paper" else []) for name in experiments.preset_names()}
    verdicts = {name: [d.same_as_paper(st) for d in p.datasets for st in p.settings] for name, p in packaged.items()}
    assert verdicts == {"embedded": [False] * 4, "paper": [True] * 4, "tiny": [False] * 4}


def test_read_results_types_the_columns(tmp_path: Path) -> None:
    rows = [{**_row("mnd", "a", True, 50.0, 0.99), "model": "m", "targeted": False, "clean_label": 3,
             "adv_label": 4, "target_label": "", "note": "", "seed": 0, "task": "imagenet", "max_iter": 1000}]
    experiments.write_rows(tmp_path / experiments.RESULTS_CSV, rows, experiments.GRID_COLUMNS)
    back = experiments.read_results(tmp_path)[0]
    assert back["success"] is True and back["targeted"] is False and back["attacked"] is True
    assert back["clean_label"] == 3 and back["target_label"] is None and back["max_iter"] == 1000
    assert back["psnr"] == pytest.approx(50.0)
    assert experiments.read_results(tmp_path / "none") == []


@pytest.mark.parametrize(
    "override, problem",
    [
        ("max_iter=abc", "max_iter must be a whole number, got 'abc'"),
        ("max_iter=-5", "max_iter must be from 1 to 1000000, got -5"),
        ("max_iter=99999999999999999999", "max_iter must be from 1 to 1000000, got 99999999999999999999"),
        ("batch_size=0", "batch_size must be from 1 to 4096, got 0"),
        ("seed=-1", "seed must be from 0 to 4294967295, got -1"),
        ("threads=[2]", "threads must be a whole number"),
    ],
)
def test_bad_whole_number_settings_name_the_preset_and_key(override, problem):
    with pytest.raises(InputError) as exc:
        experiments.load_preset("tiny", [override])
    assert str(exc.value).startswith("tiny.toml: ") and problem in str(exc.value)


# --- inputs: one preprocessing function, one face-cut choice ---------------------------------


def test_open_dataset_prepares_photos_with_the_one_preprocessing_function(tmp_path, tiny_model):
    preset = experiments.load_preset(write_preset(tmp_path))
    opened = experiments.open_dataset(preset, preset.dataset("photos"))
    assert [it.name for it in opened.items] == ["chelsea", "coffee"]
    photos = {im.name: im.pixels for im in data.embedded_images(["chelsea", "coffee"])}
    for it in opened.items:
        assert isinstance(it, experiments.DatasetImage) and it.label is None
        assert torch.equal(it.tensor, data.prepare_image(photos[it.name], models.spec(TEST_MODEL)))


@pytest.mark.parametrize("face_crop, size", [("dlib_chip", 150), ("mtcnn", 64)])
def test_open_dataset_cuts_faces_as_the_models_spec_says(tmp_path, monkeypatch, face_crop, size):
    spec = models.ModelSpec(name="test_face_cnn", task="faces", input_size=size, resize=size, offline=True,
                            embedding=False, builder=TinyCNN, weights_hint="test", face_crop=face_crop)
    monkeypatch.setitem(models.REGISTRY, spec.name, spec)
    path = tmp_path / "faces.toml"
    path.write_text(textwrap.dedent(f"""
        name = "faces"
        methods = ["bim"]
        [datasets.faces]
        source = "embedded"
        images = ["astronaut"]
        model = "{spec.name}"
        """))
    preset = experiments.load_preset(path)
    (item,) = experiments.open_dataset(preset, preset.dataset("faces")).items
    pixels = data.embedded_images(["astronaut"])[0].pixels
    assert item.tensor.shape == (3, size, size)
    assert torch.equal(item.tensor, quantize(faces.cut_faces(pixels, spec, where="astronaut").faces[0]))


# --- shards ----------------------------------------------------------------------------------

SHARD_SCRIPT = """
import sys
from pathlib import Path
from mnd import experiments, models
from tests.test_grid import TEST_MODEL, tiny_spec
import torch
torch.set_num_threads(1)
models.REGISTRY[TEST_MODEL] = tiny_spec()
preset = experiments.load_preset(sys.argv[1])
experiments.run_grid(preset, Path(sys.argv[2]), progress=False, shard=experiments.Shard.parse(sys.argv[3]))
"""


def test_two_shards_in_two_processes_merge_into_the_rows_of_one_run(tmp_path: Path, tiny_model: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    preset_file = write_preset(tmp_path, methods='["bim", "pgd", "no_norm"]', extra="batch_size = 2")
    preset_file.write_text(preset_file.read_text().replace("batch_size = 1\n", "").replace(
        'images = ["chelsea", "coffee"]', 'images = ["chelsea", "coffee", "astronaut"]'))
    preset = experiments.load_preset(preset_file)
    whole = experiments.run_grid(preset, tmp_path / "whole", progress=False)
    assert whole.computed == 18 and whole.failed == 0

    sharded = tmp_path / "sharded"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    runs = [subprocess.Popen([sys.executable, "-c", SHARD_SCRIPT, str(preset_file), str(sharded), f"{i}/2"],
                             cwd=root, env=env, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read() if run.stderr else ""
    assert not (sharded / experiments.RESULTS_CSV).exists() and not (sharded / "run.json").exists()
    parts = [experiments.read_rows(experiments.shard_csv(sharded, experiments.Shard(i, 2))) for i in (1, 2)]
    keys = [{(r["dataset"], r["setting"], r["method"], r["image"]) for r in part} for part in parts]
    assert keys[0] and keys[1] and not keys[0] & keys[1] and len(keys[0] | keys[1]) == 18

    calls: list[object] = []
    real = experiments.run_method
    monkeypatch.setattr(grid, "run_method", lambda *a, **k: calls.append(a) or real(*a, **k))
    merged = experiments.run_grid(preset, sharded, progress=False)
    assert calls == [] and merged.merged == 18 and merged.computed == 0 and merged.reused == 18
    assert table(sharded) == table(tmp_path / "whole")
    assert sorted(p.name for p in (sharded / "shards" / "merged").iterdir()) == [
        "results.1-of-2.csv", "results.2-of-2.csv"]
    again = experiments.run_grid(preset, sharded, progress=False)  # idempotent: nothing left to merge
    assert again.merged == 0 and again.computed == 0 and table(sharded) == table(tmp_path / "whole")


def test_a_shard_runs_only_its_batches_and_resumes(tmp_path: Path, tiny_model: str) -> None:
    preset = experiments.load_preset(write_preset(tmp_path))
    first = experiments.run_grid(preset, tmp_path / "r", progress=False, shard=experiments.Shard(1, 3))
    second = experiments.run_grid(preset, tmp_path / "r", progress=False, shard=experiments.Shard(1, 3))
    assert first.computed == 3 and second.computed == 0 and second.reused == 3  # 8 batches of one: 0, 3, 6


def test_shards_sharing_a_claims_folder_run_each_batch_once(tmp_path: Path, tiny_model: str) -> None:
    preset = experiments.load_preset(write_preset(tmp_path))
    claims = tmp_path / "claims"
    claims.mkdir()
    first = experiments.run_grid(preset, tmp_path / "r", progress=False, shard=experiments.Shard(1, 2, str(claims)))
    second = experiments.run_grid(preset, tmp_path / "r", progress=False, shard=experiments.Shard(2, 2, str(claims)))
    assert first.computed == 8 and second.computed == 0  # the first came to every batch first
    assert sorted(int(p.name) for p in claims.iterdir()) == list(range(8))
    merged = experiments.run_grid(preset, tmp_path / "r", progress=False)
    assert merged.merged == 8 and merged.computed == 0


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/2/3", "-1/2"])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="--shard"):
        experiments.Shard.parse(text)


def test_the_command_line_runs_a_shard_and_refuses_a_bad_one(tmp_path: Path, tiny_model: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    preset = str(write_preset(tmp_path))
    out = tmp_path / "r"
    assert main(["book", "--preset", preset, "--results", str(out), "--shard", "2/2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "shard 2-of-2: 4 computed" in printed and not (out / experiments.RESULTS_CSV).exists()
    assert main(["book", "--preset", preset, "--results", str(out), "--shard", "3/2"]) == 2
    assert "mnd: error: --shard: I must be between 1 and N" in capsys.readouterr().err
    assert main(["book", "--preset", preset, "--results", str(out), "--shard", "1/2", "--no-run"]) == 2


def test_sweep_points_are_methods_with_their_parameter(tmp_path: Path, tiny_model: str) -> None:
    assert experiments.method_label("bim@eps=2") == "BIM (eps 2/255)"
    assert experiments.method_label("mnd@margin=4") == "MND (margin 4)"
    assert experiments.is_mnd("l1@margin=1") and not experiments.is_mnd("pgd@eps=4")
    for bad, why in (("ddn@eps=4", "cannot be swept"), ("bim@margin=1", "only eps"), ("bim@eps=0", "out of range"),
                     ("bim@eps=x", "malformed"), ("nope@eps=1", "unknown method")):
        with pytest.raises(InputError, match=why):
            experiments.check_method(bad)
    preset = experiments.load_preset(write_preset(tmp_path, methods='["bim@eps=2", "bim", "no_norm@margin=1"]'),
                                     ['settings=["non-targeted"]'])
    experiments.run_grid(preset, tmp_path / "r", progress=False)
    rows = {(r["method"], r["image"]): r for r in experiments.read_results(tmp_path / "r")}
    assert rows[("bim@eps=2", "coffee")]["eps"] == pytest.approx(2 / 255, rel=1e-5)
    assert rows[("bim", "coffee")]["eps"] == pytest.approx(8 / 255, rel=1e-5)
    assert rows[("no_norm@margin=1", "coffee")]["margin"] == 1.0
    assert rows[("bim@eps=2", "coffee")]["max_iter"] in ("", None)  # an anchor's budget is its own
    assert rows[("no_norm@margin=1", "coffee")]["max_iter"] == 30


def test_every_grid_row_says_whether_it_survives_sharing(tmp_path: Path, tiny_model: str) -> None:
    preset = experiments.load_preset(write_preset(tmp_path, methods='["bim"]'), ['settings=["non-targeted"]'])
    experiments.run_grid(preset, tmp_path / "r", progress=False)
    rows = experiments.read_results(tmp_path / "r")
    assert rows and all(isinstance(r[k], bool) for r in rows for k in ("jpeg95", "jpeg85", "jpeg75", "resize50"))
    assert all(not r["jpeg75"] for r in rows if not r["success"])


def test_tradeoff_methods_run_on_the_first_images_and_are_compared_on_them(tmp_path: Path, tiny_model: str) -> None:
    extra = '[tradeoff]\nmethods = ["bim@eps=2", "bim"]\nimages = 1'
    preset = experiments.load_preset(write_preset(tmp_path, methods='["bim"]', extra=extra),
                                     ['settings=["non-targeted"]'])
    assert preset.grid_methods == ("bim", "bim@eps=2")  # a paper method listed again runs once, on every image
    experiments.run_grid(preset, tmp_path / "r", progress=False)
    rows = experiments.read_results(tmp_path / "r")
    assert sorted((r["method"], r["image"]) for r in rows) == [("bim", "chelsea"), ("bim", "coffee"),
                                                                ("bim@eps=2", "chelsea")]
    from mnd.book.curves import common_image_count, same_images

    assert {(r["method"], r["image"]) for r in same_images(rows)} == {("bim", "chelsea"), ("bim@eps=2", "chelsea")}
    assert common_image_count(rows, "photos", "non-targeted") == 1
    again = experiments.run_grid(preset, tmp_path / "r", progress=False)
    assert again.computed == 0 and again.reused == 3
    for bad, why in (('[tradeoff]\nmethods = ["nope"]', "unknown method"),
                     ("[tradeoff]\nimages = 0", "images must be from 1 to 1000000, got 0"),
                     ('[tradeoff]\nmethod = ["bim"]', "methods, images, max_iter and skip only"),
                     ('[tradeoff]\nmethods = ["ddn"]\n[tradeoff.skip]\ntargeted = ["bim"]', "must list methods of"),
                     ('[tradeoff]\nmethods = ["ddn"]\n[tradeoff.skip]\nsideways = ["ddn"]', "must map settings"),
                     ("[tradeoff]\nmax_iter = 2000000", "max_iter must be from 1")):
        with pytest.raises(InputError, match=why):
            experiments.load_preset(write_preset(tmp_path, extra=bad))


def test_the_embedded_gallery_enrols_a_mirrored_view_and_probes_with_the_photo(tmp_path: Path) -> None:
    path = tmp_path / "faces.toml"
    path.write_text(textwrap.dedent("""
        name = "faces"
        methods = ["bim"]
        [datasets.faces]
        source = "embedded"
        images = ["astronaut", "grace_hopper"]
        model = "dlib_resnet_v1"
        task = "faces"
        gallery = "embedded"
        """))
    preset = experiments.load_preset(path)
    opened = experiments.open_dataset(preset, preset.dataset("faces"))
    assert opened.classes == ["astronaut", "grace_hopper"]
    x = torch.stack([it.tensor for it in opened.items])
    with torch.no_grad():
        distances = opened.model.distances(x)
        logits = opened.model(x)
    assert logits.argmax(1).tolist() == [0, 1] == [it.label for it in opened.items]
    own = distances.diagonal()
    # Another view of the same face: clearly not the enrolled chip itself, clearly closer than the other person.
    assert (own > 0.05).all() and (own < 0.4).all() and (distances[0, 1] > 0.5) and (distances[1, 0] > 0.5)


@pytest.mark.slow
def test_two_worker_processes_give_the_rows_of_one(tmp_path: Path) -> None:
    overrides = ['methods=["bim"]', 'settings=["non-targeted"]', "workers=2", "batch_size=1"]
    preset = experiments.load_preset("tiny", overrides)
    report = experiments.run_workers(preset, tmp_path / "two", progress=False)
    assert (report.computed, report.reused, report.failed) == (4, 0, 0) and report.cpu_seconds["user"] > 0
    one = experiments.run_grid(experiments.load_preset("tiny", overrides[:2] + ["batch_size=1"]), tmp_path / "one",
                               progress=False)
    assert one.computed == 4
    key = ("dataset", "setting", "method", "image", "success", "psnr", "sha256")
    rows = [[tuple(r[k] for k in key) for r in experiments.read_rows(d / experiments.RESULTS_CSV)]
            for d in (tmp_path / "two", tmp_path / "one")]
    assert rows[0] == rows[1]
    assert not list((tmp_path / "two" / experiments.SHARDS_DIR).glob("results.*.csv"))  # merged and retired
    assert not list((tmp_path / "two" / experiments.SHARDS_DIR).glob("claims-*"))  # the run's claims are removed


def test_the_grid_keeps_the_steps_of_its_own_runs_on_the_figure_image(tmp_path: Path, tiny_model: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_preset(tmp_path, methods='["bim", "no_norm", "mnd"]')
    path.write_text(path.read_text().replace("batch_size = 1", "batch_size = 2") + 'figure_image = "coffee"\n')
    preset = experiments.load_preset(path)  # coffee is the second image of a batch of two
    experiments.run_grid(preset, tmp_path / "r", progress=False)
    rows = {(r["setting"], r["method"], r["image"]): r for r in experiments.read_rows(tmp_path / "r" / "results.csv")}
    kept = sorted(p.relative_to(tmp_path / "r" / "trace").as_posix() for p in (tmp_path / "r" / "trace").rglob("*.csv"))
    # the figure image, both settings, the MND variants only (bim has no steps to keep)
    assert kept == [f"photos/{s}/coffee/{v}.csv" for s in ("non-targeted", "targeted") for v in ("mnd", "no_norm")]

    monkeypatch.setattr(trace, "_traces", lambda *a, **k: pytest.fail("the kept trace was not read"))
    for setting in ("non-targeted", "targeted"):
        steps = trace.load_or_run(preset, tmp_path / "r", "photos", "coffee", setting, variants=["no_norm", "mnd"])
        for variant in ("no_norm", "mnd"):
            mine = [s for s in steps if s["variant"] == variant]
            row = rows[(setting, variant, "coffee")]
            # the trace is that run's own: it ends at the row's iterations, success and 8-bit PSNR
            assert [s["iteration"] for s in mine] == list(range(int(row["iterations"]) + 1))
            assert mine[-1]["adversarial"] == (str(row["success"]) == "True")
            assert mine[-1]["psnr"] == pytest.approx(float(row["psnr"]), rel=1e-4)
            assert mine[0]["l1"] == 0 and mine[0]["max_iter"] == 30


def test_a_trace_missing_from_the_grid_is_computed_and_kept(tmp_path: Path, tiny_model: str) -> None:
    preset = experiments.load_preset(write_preset(tmp_path, methods='["no_norm"]'))
    steps = trace.load_or_run(preset, tmp_path / "r", "photos", "coffee", "non-targeted")
    assert {s["variant"] for s in steps} == {"no_norm"}
    path = trace.trace_path(tmp_path / "r", "photos", "non-targeted", "coffee", "no_norm")
    assert trace.read(path) == trace.load_or_run(preset, tmp_path / "r", "photos", "coffee", "non-targeted")
    capped = trace.load_or_run(preset, tmp_path / "r", "photos", "coffee", "non-targeted", max_iter=3)
    assert {s["max_iter"] for s in capped} == {3}  # another cap is computed again, not read back
