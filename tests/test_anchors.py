from __future__ import annotations

import pytest
import torch

from mnd import anchors
from mnd.attack import quantize
from mnd.errors import InputError

HALF_LEVEL = 0.5 / 255


@pytest.mark.parametrize("name", sorted(anchors.ANCHORS))
def test_anchor_stays_in_its_eps_ball_on_the_8bit_grid(name, linear_model, images):
    res = anchors.run(name, linear_model, images)
    delta = (res.adversarial - images).abs().amax()
    assert delta.item() <= anchors.DEFAULT_EPS + HALF_LEVEL + 1e-6
    assert delta.item() > 1 / 255, "the anchor should move the image"
    assert torch.equal(res.adversarial, quantize(res.adversarial))
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    with torch.no_grad():
        pred = linear_model(res.adversarial).argmax(1)
    assert torch.equal(pred, res.adv_label)
    assert torch.equal(res.success, pred != res.clean_label)
    assert (res.iterations == 10).all()


def test_targeted_anchor_aims_at_the_least_likely_class(linear_model, images):
    res = anchors.run("bim", linear_model, images, targeted=True, eps=32 / 255, steps=20)
    with torch.no_grad():
        target = linear_model(images).argmin(1)
    assert torch.equal(res.target_label, target)
    assert res.success.all()
    assert torch.equal(res.adv_label, target)


def test_pgd_is_reproducible_for_a_seed(linear_model, images):
    a = anchors.run("pgd", linear_model, images, seed=3)
    b = anchors.run("pgd", linear_model, images, seed=3)
    assert torch.equal(a.adversarial, b.adversarial)


def test_unknown_anchor(linear_model):
    with pytest.raises(InputError, match="unknown anchor"):
        anchors.build("fgsm2", linear_model)
