"""The transfer anchors (TIFGSM, VMIFGSM, SINIFGSM, through torchattacks) and the noise control."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mnd.cli.main import main
from mnd.core import anchors
from mnd.core.pixels import quantize
from mnd.data.imageio import load_rgb, to_tensor
from mnd.errors import InputError
from mnd.experiments import methods
from tests.conftest import Linear

HALF_LEVEL = 0.5 / 255


@pytest.fixture
def smooth_model() -> Linear:
    """Three classes over 3x16x16 images whose weights vary smoothly in space, logits W (x - 0.5) / 10.

    Translation-invariant attacks (TIFGSM) smooth the gradient; on a model with
    independent per-pixel weights that smoothing would erase the gradient, on
    this one it keeps its direction, as on a convolutional network. Centred and
    scaled so that the softmax is not saturated on :func:`images` (clean
    margins below 2, while 16/255 can move a logit difference by more than 3).
    """
    g = torch.Generator().manual_seed(2)
    coarse = torch.randn(3, 3, 4, 4, generator=g)
    weight = F.interpolate(coarse, size=16, mode="bilinear", align_corners=False).flatten(1) / 10
    return Linear(weight, -0.5 * weight.sum(1)).eval()


def _loss(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), labels, reduction="none")


@pytest.mark.parametrize("eps", [4, 8, 16])
@pytest.mark.parametrize("name", anchors.TRANSFER_ANCHORS)
def test_a_transfer_anchor_raises_the_loss_within_its_budget(name, eps, smooth_model, images):
    res = methods.run_method(smooth_model, images, None, f"{name}@eps={eps}")
    delta = (res.adversarial - images).abs().amax(dim=(1, 2, 3))
    assert (delta <= eps / 255 + HALF_LEVEL + 1e-6).all()
    assert (delta >= eps / 255 - HALF_LEVEL - 1e-6).all(), "ten steps of eps/4 should reach the budget"
    assert torch.equal(res.adversarial, quantize(res.adversarial))
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    assert (_loss(smooth_model, res.adversarial, res.clean_label) > _loss(smooth_model, images, res.clean_label)).all()
    assert res.extras["eps"] == pytest.approx(eps / 255) and (res.iterations == 10).all()
    with torch.no_grad():
        assert torch.equal(smooth_model(res.adversarial).argmax(1), res.adv_label)
    if eps == 16:
        assert res.success.all(), f"{name} at 16/255 should fool the linear model on every image"


@pytest.mark.parametrize("name", anchors.TRANSFER_ANCHORS)
def test_a_transfer_anchor_aims_at_the_least_likely_class(name, smooth_model, images):
    res = anchors.run(name, smooth_model, images, targeted=True, eps=16 / 255, alpha=4 / 255)
    with torch.no_grad():
        target = smooth_model(images).argmin(1)
    assert torch.equal(res.target_label, target)
    assert (_loss(smooth_model, res.adversarial, target) < _loss(smooth_model, images, target)).all()
    assert torch.equal(res.success, res.adv_label == target)


def test_sinifgsm_attacks_each_image_of_a_batch_as_if_alone(smooth_model, images):
    # no randomness and a per-image gradient normalization: the batch must not change any image's result
    together = anchors.run("sinifgsm", smooth_model, images).adversarial
    alone = torch.cat([anchors.run("sinifgsm", smooth_model, images[i:i + 1]).adversarial for i in range(len(images))])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("name", ["tifgsm", "vmifgsm"])
def test_a_random_transfer_anchor_is_reproducible_for_a_seed(name, smooth_model, images):
    a, b = (anchors.run(name, smooth_model, images, seed=5).adversarial for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, anchors.run(name, smooth_model, images, seed=6).adversarial)


def test_tifgsm_sees_the_model_through_the_margin_view(smooth_model, images):
    plain = anchors.run("tifgsm", smooth_model, images, eps=16 / 255, alpha=4 / 255)
    strict = anchors.run("tifgsm", smooth_model, images, eps=16 / 255, alpha=4 / 255, margin=5)
    assert plain.success.all() and not strict.success.any()
    assert strict.reason == ["not adversarial by a logit margin of 5 after 10 steps of TIFGSM"] * len(images)
    assert (strict.adv_label != strict.clean_label).all(), "the labels flip, the margin of 5 is what is missing"


# --- the noise control -------------------------------------------------------------------------


@pytest.fixture
def extremes(images) -> torch.Tensor:
    """The smooth images with black and white corners, where the noise must be clipped."""
    x = images.clone()
    x[:, :, :4, :4] = 0.0
    x[:, :, -4:, -4:] = 1.0
    return x


@pytest.mark.parametrize("eps", [1, 4, 8])
def test_noise_moves_every_pixel_by_its_budget_and_clips(eps, linear_model, extremes):
    method = "noise" if eps == 8 else f"noise@eps={eps}"
    res = methods.run_method(linear_model, extremes, None, method)
    delta = res.adversarial - extremes
    assert torch.equal(res.adversarial, quantize(res.adversarial))
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    inside = (extremes >= eps / 255) & (extremes <= 1 - eps / 255)  # no clipping possible there
    torch.testing.assert_close(delta[inside].abs(), torch.full_like(delta[inside], eps / 255), atol=1e-6, rtol=0)
    assert delta.abs().amax() <= eps / 255 + 1e-6
    assert (delta[:, :, :4, :4] >= 0).all() and (delta[:, :, -4:, -4:] <= 0).all()  # clipped at 0 and 1
    up = (delta[inside] > 0).float().mean().item()
    assert 0.45 < up < 0.55, f"signs should be balanced, {up:.3f} went up"
    assert res.extras["eps"] == pytest.approx(eps / 255) and (res.iterations == 1).all()


def test_noise_is_seeded_and_the_same_signs_at_every_budget(linear_model, images):
    a = methods.run_method(linear_model, images, None, "noise@eps=4", seed=3).adversarial
    b = methods.run_method(linear_model, images, None, "noise@eps=4", seed=3).adversarial
    c = methods.run_method(linear_model, images, None, "noise@eps=4", seed=4).adversarial
    d = methods.run_method(linear_model, images, None, "noise@eps=1", seed=3).adversarial
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.sign(a - images), torch.sign(d - images))


def test_noise_never_asks_for_a_gradient(linear_model, images):
    calls = []

    class Watched(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = linear_model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(torch.is_grad_enabled() and x.requires_grad)
            return self.net(x)

    res = anchors.run("noise", Watched(), images, targeted=True)
    assert calls and not any(calls)
    assert torch.equal(res.success, res.adv_label == res.target_label)
    failed = [r for ok, r in zip(res.success.tolist(), res.reason) if not ok]
    assert all(r == "not adversarial with random sign noise of this budget (a control)" for r in failed)


def test_noise_is_marked_a_control_and_named_everywhere():
    assert anchors.CONTROLS == methods.CONTROLS == ("noise",)
    assert methods.TABLE_ORDER[-4:] == (*anchors.TRANSFER_ANCHORS, "noise")
    assert set(anchors.CONTROLS + anchors.TRANSFER_ANCHORS) <= set(methods.NOT_IN_PAPER)
    assert not set(anchors.CONTROLS + anchors.TRANSFER_ANCHORS) & set(anchors.MOS_ORDER)
    assert methods.method_label("noise@eps=4") == "random sign noise (eps 4/255)"
    assert methods.method_label("sinifgsm") == "SINIFGSM"
    for good in ("tifgsm", "vmifgsm@eps=4", "sinifgsm@eps=16", "noise@eps=1"):
        methods.check_method(good)
    for bad, needle in (("noise@margin=1", "cannot be swept over 'margin'"), ("tifgsm@eps=0", "out of range"),
                        ("tifgsm@eps=256", "out of range")):
        with pytest.raises(InputError, match=needle):
            methods.check_method(bad)


# --- end to end --------------------------------------------------------------------------------


def test_mnd_attack_runs_tifgsm_at_a_budget_end_to_end(tmp_path, photos, effnet, capsys, one_thread):
    from mnd import models
    from mnd.data.prepare import prepare_image

    photo = tmp_path / "in" / "coffee.png"
    photo.parent.mkdir()
    Image.fromarray(photos["coffee"]).save(photo)
    out = tmp_path / "out"
    assert main(["attack", str(photo), "--method", "tifgsm@eps=8", "--out", str(out), "--quiet"]) == 0
    assert "1/1 attacked images adversarial" in capsys.readouterr().out
    with (out / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["method"] == "tifgsm@eps=8" and row["success"] == "True"
    clean = prepare_image(photos["coffee"], models.spec("efficientnet_lite0"))
    saved = to_tensor(load_rgb(out / "coffee.png").pixels)
    assert (saved - clean).abs().amax() <= 8 / 255 + 1e-6
    with torch.no_grad():
        pred = effnet(saved[None]).argmax(1).item()
    assert pred == int(row["adv_label"]) != int(row["clean_label"])
