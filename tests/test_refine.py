"""MND + refinement (``mnd_refine``, ours): it succeeds, its saved 8-bit output is adversarial, it is never
worse than MND in PSNR and clearly better where MND's change is dense, and it keeps to its budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnd.core import metrics, refine
from mnd.core.attack import generate
from mnd.core.config import config_for
from mnd.core.pixels import quantize
from mnd.core.refine import RefineConfig, generate_refined, load_refine
from mnd.data.imageio import load_rgb, save_png, to_tensor
from mnd.errors import InputError
from mnd.experiments import methods

from tests.conftest import Linear

FAST = dict(max_iter=300, step_size=1e-3)


@pytest.fixture
def heavy_tailed(images) -> tuple[Linear, torch.Tensor]:
    """A linear model whose weights are heavy-tailed (cubed normals), as image classifiers' input gradients
    are, with a bias that leaves one image a small margin (1 logit): the cheapest adversarial change is a
    few pixels, while MND's Adam steps change many by one level."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, images[0].numel(), generator=g) ** 3
    x = images[:1]
    bias = -(weight @ x.flatten()) + torch.tensor([1.0, 0.0, -1.0])
    return Linear(weight, bias).eval(), x


def _adversarial(model: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    with torch.no_grad():
        pred = model(image).argmax(1)
    return pred == label if targeted else pred != label


@pytest.mark.parametrize("targeted", [False, True])
def test_succeeds_on_8bit_images_never_below_mnd_within_budget(linear_model, images, targeted):
    cfg = config_for("mnd", targeted=targeted, **FAST)
    knobs = RefineConfig(steps=30)
    plain = generate(linear_model, images, config=cfg)
    res = generate_refined(linear_model, images, config=cfg, refine_config=knobs)
    assert plain.success.all() and res.success.all()
    assert torch.equal(res.adversarial, quantize(res.adversarial))
    goal = res.target_label if targeted else res.clean_label
    assert _adversarial(linear_model, res.adversarial, goal, targeted=targeted).all()
    # MND's own output is the first candidate: the refinement can only raise PSNR
    assert (metrics.psnr(res.adversarial, images) >= metrics.psnr(plain.adversarial, images)).all()
    assert res.extras["mnd_iterations"] == plain.iterations.tolist()
    assert torch.equal(res.iterations, plain.iterations + knobs.steps)


@pytest.mark.parametrize("targeted", [False, True])
def test_clearly_better_than_mnd_where_few_pixels_suffice(heavy_tailed, targeted):
    model, x = heavy_tailed
    cfg = config_for("mnd", targeted=targeted)  # the paper's step and budget
    plain = generate(model, x, config=cfg)
    res = generate_refined(model, x, config=cfg)  # the packaged knobs
    assert plain.success.item() and res.success.item()
    goal = res.target_label if targeted else res.clean_label
    assert _adversarial(model, res.adversarial, goal, targeted=targeted).item()
    gain = (metrics.psnr(res.adversarial, x) - metrics.psnr(plain.adversarial, x)).item()
    assert gain > 5.0, f"{gain:.2f} dB"  # about 8 to 11 dB here
    assert metrics.changed_ratio(res.adversarial, x).item() < metrics.changed_ratio(plain.adversarial, x).item() / 3


def test_images_mnd_does_not_turn_adversarial_are_left_as_mnd_left_them(linear_model, images):
    cfg = config_for("mnd", max_iter=3, step_size=1e-3)
    plain = generate(linear_model, images, config=cfg)
    res = generate_refined(linear_model, images, config=cfg, refine_config=RefineConfig(steps=5))
    assert not res.success.any()
    assert torch.equal(res.adversarial, plain.adversarial) and torch.equal(res.iterations, plain.iterations)
    assert res.reason == plain.reason


def test_zero_steps_is_mnd(linear_model, images):
    cfg = config_for("mnd", **FAST)
    plain = generate(linear_model, images, config=cfg)
    res = generate_refined(linear_model, images, config=cfg, refine_config=RefineConfig(steps=0))
    assert torch.equal(res.adversarial, plain.adversarial) and torch.equal(res.iterations, plain.iterations)


def test_keep_perceptual_returns_an_adversarial_image_no_worse_in_eq_7(heavy_tailed):
    from mnd.core import losses

    model, x = heavy_tailed
    cfg = config_for("mnd")
    plain = generate(model, x, config=cfg)
    res = generate_refined(model, x, config=cfg, refine_config=RefineConfig(keep="perceptual"))
    assert res.success.item()
    pqp = [losses.perceptual_loss(a, x, betas=cfg.betas).item() for a in (res.adversarial, plain.adversarial)]
    assert pqp[0] <= pqp[1]


def test_real_model_saved_png_is_adversarial_and_sharper(effnet, photos, tmp_path, one_thread):
    from mnd import models
    from mnd.data.imageio import LoadedImage
    from mnd.data.prepare import prepare_image

    spec = models.spec("efficientnet_lite0")
    full = prepare_image(LoadedImage(Path("chelsea"), photos["chelsea"]), spec)[None]
    x = quantize(torch.nn.functional.interpolate(full, size=64, mode="area"))  # a tiny input: seconds, not minutes
    cfg = config_for("mnd")
    plain = generate(effnet, x, config=cfg)
    res = generate_refined(effnet, x, config=cfg, refine_config=RefineConfig(steps=60))
    assert plain.success.item() and res.success.item()
    png = to_tensor(load_rgb(save_png(res.adversarial[0], tmp_path / "chelsea.png")).pixels)[None]
    assert torch.equal(png, res.adversarial)
    assert _adversarial(effnet, png, res.clean_label, targeted=False).item()
    gain = (metrics.psnr(png, x) - metrics.psnr(plain.adversarial, x)).item()
    assert gain > 3.0, f"{gain:.2f} dB"


def test_through_the_registry(linear_model, images):
    assert "mnd_refine" in methods.METHODS and methods.is_mnd("mnd_refine")
    assert methods.NOT_IN_PAPER[0] == "mnd_refine" and "mnd_refine" in methods.TABLE_ORDER
    assert methods.method_label("mnd_refine") == "MND + refinement (ours)"
    assert methods.method_label("mnd_refine@margin=1") == "MND + refinement (ours) (margin 1)"
    methods.check_method("mnd_refine@margin=1")
    with pytest.raises(InputError, match="cannot be swept over 'eps'"):
        methods.check_method("mnd_refine@eps=4")
    res = methods.run_method(linear_model, images, None, "mnd_refine", **FAST)
    direct = generate_refined(linear_model, images, config=config_for("mnd", **FAST))
    assert torch.equal(res.adversarial, direct.adversarial) and res.success.all()
    strong = methods.run_method(linear_model, images, None, "mnd_refine@margin=1", **FAST)
    assert strong.margin == 1.0 and strong.success.all()


@pytest.mark.parametrize("text, message", [
    ("[refine]\nsteps = -1\n", "steps = -1: must be an integer from 0 to 1000000"),
    ("[refine]\nsteps = 99999999999999999999\n", "steps = 99999999999999999999: must be an integer from 0 to 1000000"),
    ("[refine]\nstep_size = 0\n", "step_size = 0: must be a number > 0"),
    ("[refine]\nkeep = 'ssim'\n", "keep = 'ssim': must be one of 'psnr', 'perceptual'"),
    ("[refine]\nstep_sise = 1e-3\n", "unknown key 'step_sise' in [refine]"),
    ("[other]\n", "must hold exactly one [refine] table"),
    ("[refine\n", "not valid TOML"),
])
def test_knob_file_problems_name_the_key_and_the_file(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_refine(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_knob_file_defaults_and_overrides(tmp_path):
    assert load_refine() == RefineConfig()
    path = tmp_path / "mine.toml"
    path.write_text("[refine]\nsteps = 7\nstep_size = 1\n")
    assert load_refine(path) == RefineConfig(steps=7, step_size=1.0)
    with pytest.raises(ValueError, match="steps"):
        RefineConfig(steps=True)  # type: ignore[arg-type]
    assert refine.step_size_at(0, RefineConfig(step_size=0.25)) == 0.25


@pytest.mark.slow
def test_mnd_attack_with_mnd_refine_writes_an_adversarial_png(tmp_path, effnet, capsys, monkeypatch, one_thread):
    import csv

    import skimage.data
    from PIL import Image

    from mnd.cli.main import main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.png")
    monkeypatch.setattr(refine, "load_refine", lambda path=None: RefineConfig(steps=5))  # 100 take 30 s on a CPU
    out = tmp_path / "out"
    code = main(["attack", str(folder), "--method", "mnd_refine", "--max-iter", "200", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr()
    with (out / "metrics.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["method"] == "mnd_refine" and row["success"] == "True" and int(row["iterations"]) > 5
    png = to_tensor(load_rgb(out / "chelsea.png").pixels)[None]
    with torch.no_grad():
        assert effnet(png).argmax(1).item() == int(row["adv_label"]) != int(row["clean_label"])
    plain = main(["attack", str(folder), "--method", "mnd_refine", "--task", "faces", "--hparams",
                  str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o2"), "--quiet"])
    assert plain == 2 and "missing.toml" in capsys.readouterr().err
