from __future__ import annotations

import pytest
import torch

from mnd import experiments
from mnd.study import protocol as mos
from mnd.core import anchors, attack
from mnd.core.anchors import LABELS
from mnd.core.config import VARIANTS
from mnd.core.pixels import quantize
from mnd.errors import InputError
from mnd.experiments import methods

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
    assert (res.iterations == (1 if name in anchors.CONTROLS else 10)).all()  # noise: one draw


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


def test_targeted_goal_is_never_the_true_label(images):
    from tests.conftest import Linear

    tied = Linear(torch.zeros(3, 3 * 16 * 16), torch.zeros(3)).eval()  # equal outputs: target = prediction
    res = anchors.run("bim", tied, images, targeted=True)
    assert torch.equal(res.target_label, res.true_label)
    assert not res.attacked.any() and not res.success.any() and (res.iterations == 0).all()
    assert torch.equal(res.adversarial, images)
    assert all("true label" in r for r in res.reason)
    one_class = Linear(torch.randn(1, 3 * 16 * 16), torch.zeros(1)).eval()
    res = anchors.run("pgd", one_class, images)
    assert not res.attacked.any() and all("single class" in r for r in res.reason)


def test_an_unchanged_output_is_never_a_success(linear_model, images):
    from tests.test_attack import _Fickle

    res = anchors.run("bim", _Fickle(linear_model), images, eps=0.0)  # no budget: nothing moves
    assert torch.equal(res.adversarial, images)
    assert (res.adv_label != res.true_label).all(), "the model does call the output adversarial"
    assert not res.success.any()
    assert res.reason == [attack.UNCHANGED] * len(images)


def test_reasons_say_why_an_anchor_failed(linear_model, images):
    res = anchors.run("bim", linear_model, images, eps=1 / 255, steps=1)
    assert not res.success.all(), "one level in one step should not fool every image"
    for ok, why in zip(res.success.tolist(), res.reason):
        assert why == ("" if ok else "not adversarial after 1 step of BIM")


def test_one_source_of_method_names_labels_and_orders():
    assert set(anchors.LABELS) == set(anchors.ANCHORS)
    assert sorted(anchors.TABLE_ORDER) == sorted(anchors.ANCHORS)
    # the MOS columns are the paper's anchors and RFGSM; the transfer anchors and controls are not rated
    assert sorted(anchors.MOS_ORDER + anchors.TRANSFER_ANCHORS + anchors.CONTROLS) == sorted(anchors.ANCHORS)
    assert anchors.PAPER_ANCHORS == ("pgd", "mifgsm", "bim", "di2fgsm")  # section IV-A-1, Tables I/II order
    assert anchors.MOS_ANCHORS == ("bim", "di2fgsm", "mifgsm", "pgd")  # the MOS tables' columns
    assert experiments.TABLE_ORDER == (
        "pgd", "mifgsm", "bim", "di2fgsm", "rfgsm", "no_norm", "l2", "l1", "ssim", "l2_ssim", "l1_ssim", "mnd",
        "mnd_refine", "bim_min", "pgd_min", "ddn", "fmn_l2", "fmn_linf", "alma_ssim", "cw_l2",  # not in the paper
        "tifgsm", "vmifgsm", "sinifgsm", "noise",
    )
    refined = tuple(methods.REFINED)
    assert experiments.METHODS == experiments.VARIANTS + experiments.ANCHORS + refined + experiments.MIN_ANCHORS
    assert experiments.NOT_IN_PAPER == refined + experiments.MIN_ANCHORS + anchors.TRANSFER_ANCHORS + anchors.CONTROLS
    assert experiments.TABLE_ORDER is experiments.TABLE_ORDER
    assert LABELS is anchors.LABELS and mos.ANCHOR_ORDER is anchors.MOS_ORDER
    assert [experiments.method_label(m) for m in anchors.PAPER_ANCHORS] == ["PGD", "MIFGSM", "BIM", "DI2FGSM"]
    assert experiments.method_label("l1_ssim") == VARIANTS["l1_ssim"].label == "l1-norm + SSIM"
