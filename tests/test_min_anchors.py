"""The minimum-perturbation anchors (not in the paper) on the analytic linear model."""

from __future__ import annotations

import math

import pytest
import torch

from mnd.core import anchors, min_anchors
from mnd.core.attack import is_adversarial
from mnd.core.pixels import quantize
from mnd.errors import InputError
from mnd.experiments import methods
from tests.conftest import Linear

pytest.importorskip("adv_lib", reason="adversarial-library is installed from requirements-advlib.txt")

FAST = {  # small budgets: the linear model needs few steps
    "bim_min": {"max_level": 40},
    "pgd_min": {"max_level": 40},
    "ddn": {"steps": 30},
    "fmn_l2": {"steps": 30},
    "fmn_linf": {"steps": 30},
    "alma_ssim": {"num_steps": 40},
    "cw_l2": {"binary_search_steps": 4, "max_iterations": 50},
}


@pytest.fixture
def model10() -> Linear:
    """Ten classes over 3x16x16 images (ALMA's loss needs at least four); seeded."""
    g = torch.Generator().manual_seed(0)
    return Linear(torch.randn(10, 3 * 16 * 16, generator=g), torch.zeros(10)).eval()


def _check_contract(res, model, x, *, targeted: bool, margin: float = 0.0) -> None:
    """8-bit outputs; success exactly when the 8-bit output is adversarial (with the margin) and differs."""
    assert torch.equal(res.adversarial, quantize(res.adversarial))
    with torch.no_grad():
        logits = model(res.adversarial)
    assert torch.equal(res.adv_label, logits.argmax(1))
    goal = res.target_label if targeted else res.true_label
    changed = (res.adversarial != x).flatten(1).any(1)
    hit = is_adversarial(logits, goal, targeted=targeted, margin=margin)
    assert torch.equal(res.success, hit & changed & res.attacked)
    assert all((r == "") == bool(s) for r, s in zip(res.reason, res.success))
    assert res.margin == margin


@pytest.mark.parametrize("name", sorted(min_anchors.MIN_ANCHORS))
def test_non_targeted_success_is_decided_on_the_8bit_output(name, model10, images, one_thread):
    res = methods.run_method(model10, images[:2], None, name, anchor_kwargs=FAST[name])
    _check_contract(res, model10, images[:2], targeted=False)
    assert res.success.all()


@pytest.mark.parametrize("name", sorted(min_anchors.MIN_ANCHORS))
def test_targeted_reaches_the_least_likely_class(name, model10, images, one_thread):
    res = methods.run_method(model10, images[:2], None, name, targeted=True, anchor_kwargs=FAST[name])
    _check_contract(res, model10, images[:2], targeted=True)
    with torch.no_grad():
        least_likely = model10(images[:2]).argmin(1)
    assert torch.equal(res.target_label, least_likely)
    assert res.success.all() and torch.equal(res.adv_label, least_likely)


@pytest.mark.parametrize("name", ["bim_min", "pgd_min", "ddn", "fmn_linf"])
def test_a_margin_is_met_by_the_final_logits(name, model10, images, one_thread):
    plain = min_anchors.run(name, model10, images[:2], **FAST[name])
    lead = _lead(model10, plain.adversarial, plain.true_label)
    margin = float(lead.max()) + 2.0  # more than the margin-0 results have
    res = min_anchors.run(name, model10, images[:2], margin=margin, **FAST[name])
    _check_contract(res, model10, images[:2], targeted=False, margin=margin)
    assert res.success.all()
    assert bool((_lead(model10, res.adversarial, res.true_label) >= margin).all())


def _lead(model, images, true) -> torch.Tensor:
    """Best other logit minus the true one."""
    with torch.no_grad():
        logits = model(images)
    own = logits.gather(1, true.view(-1, 1)).squeeze(1)
    return logits.scatter(1, true.view(-1, 1), float("-inf")).amax(1) - own


@pytest.mark.parametrize("name", ["bim_min", "pgd_min"])
@pytest.mark.parametrize("targeted", [False, True])
def test_smallest_eps_is_minimal_on_the_grid(name, targeted, model10, images, one_thread):
    res = min_anchors.run(name, model10, images, targeted=targeted, max_level=40)
    _check_contract(res, model10, images, targeted=targeted)
    assert res.success.all()
    base = min_anchors.EPS_SEARCH[name]
    for i, level in enumerate(res.extras["eps_level"]):
        level = int(level)
        assert res.extras["eps"][i] == pytest.approx(level / 255)
        assert (res.adversarial[i] - images[i]).abs().amax().item() <= (level + 0.5) / 255 + 1e-6
        for below in range(1, level):  # every smaller level, run the same way on the same image, fails
            eps = below / 255
            fail = anchors.run(base, model10, images[i:i + 1], targeted=targeted, eps=eps, alpha=eps / 4, steps=10)
            assert not fail.success.any()


def test_smallest_eps_failure_keeps_the_input_and_says_why(model10, images, one_thread):
    res = min_anchors.run("bim_min", model10, images, targeted=True, max_level=1)
    assert not res.success.any() and res.attacked.all()
    assert torch.equal(res.adversarial, images)
    assert all("up to 1/255 of BIM" in r for r in res.reason)
    assert all(math.isnan(e) for e in res.extras["eps"]) and all(v == 0 for v in res.extras["eps_level"])
    assert (res.iterations == 10).all()


def test_not_attacked_images_keep_their_reason(images):
    tied = Linear(torch.zeros(10, 3 * 16 * 16), torch.zeros(10)).eval()  # equal outputs: target = prediction
    res = min_anchors.run("ddn", tied, images, targeted=True, steps=5)
    assert not res.attacked.any() and not res.success.any()
    assert torch.equal(res.adversarial, images) and (res.iterations == 0).all()
    assert all("true label" in r for r in res.reason)


def test_rounded_model_sees_the_8bit_image_with_a_straight_through_gradient(model10, images):
    x = (images + 0.3 / 255).requires_grad_(True)
    out = min_anchors.Rounded(model10)(x)
    assert torch.equal(out, model10(quantize(x)))
    out[:, 0].sum().backward()
    assert torch.equal(x.grad, model10.weight[0].view(1, 3, 16, 16).expand_as(x))


def test_unknown_min_anchor(model10, images):
    with pytest.raises(InputError, match="unknown minimum-perturbation anchor"):
        min_anchors.run("ddn2", model10, images)
    assert set(min_anchors.LABELS) == set(min_anchors.MIN_ANCHORS) == set(min_anchors.BUDGETS)
    assert set(methods.NOT_IN_PAPER) == (set(min_anchors.MIN_ANCHORS) | set(methods.REFINED)
                                         | set(methods.TRANSFER_ANCHORS) | set(methods.CONTROLS))
    assert methods.TABLE_ORDER[-len(methods.NOT_IN_PAPER):] == methods.NOT_IN_PAPER


def test_repair_scales_a_perturbation_that_rounding_erases(model10, images):
    x = images[:2]
    with torch.no_grad():
        top2 = model10(x).topk(2, dim=1).indices
    for i in range(2):
        toward = (model10.weight[top2[i, 1]] - model10.weight[top2[i, 0]]).sign().view(1, 3, 16, 16)
        out = (x[i:i + 1] + 0.45 / 255 * toward).clamp(0, 1)
        assert torch.equal(quantize(out), x[i:i + 1]), "the float perturbation rounds away"
        goal = min_anchors.Goal(top2[i, :1], False, 0.0)
        image, scale = min_anchors.repair(model10, x[i:i + 1], out, goal)
        size = (out - x[i:i + 1]).abs().amax().item() * 255
        assert scale > 1 and scale * size == pytest.approx(round(scale * size)), "a whole number of levels"
        assert torch.equal(image, quantize(x[i:i + 1] + scale * (out - x[i:i + 1])))
        assert model10(image).argmax(1).item() != top2[i, 0].item()


def test_alma_refuses_a_model_with_too_few_classes_in_one_line() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(InputError, match=r"needs a model with at least 3 classes non-targeted .* this one has 2"):
        min_anchors.run("alma_ssim", model, torch.rand(1, 3, 8, 8))
