"""The attack-strength knob: a logit margin that success needs (not in the paper; 0 is the paper)."""

from __future__ import annotations

import math

import pytest
import torch

from mnd.core import anchors, attack
from mnd.core.attack import MarginView, is_adversarial, with_margin
from mnd.core.config import AttackConfig, config_for
from mnd.errors import InputError
from mnd.experiments import load_preset, methods
from tests.test_attack import FAST


def _lead(logits: torch.Tensor, goal: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """Targeted: goal minus the best other logit; non-targeted: best other minus the goal."""
    own = logits.gather(1, goal.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, goal.view(-1, 1), -math.inf).amax(1)
    return own - other if targeted else other - own


def test_is_adversarial_with_a_margin():
    u = torch.tensor([[2.0, 3.0, 0.0], [1.0, 1.0, 0.0], [4.0, 0.0, 1.0], [math.nan, 9.0, 0.0]])
    true = torch.tensor([0, 0, 0, 0])
    assert is_adversarial(u, true, targeted=False).tolist() == [True, False, False, False]  # argmax, ties to 0
    assert is_adversarial(u, true, targeted=False, margin=1.0).tolist() == [True, False, False, False]
    assert is_adversarial(u, true, targeted=False, margin=1.01).tolist() == [False, False, False, False]
    target = torch.tensor([1, 1, 0, 1])
    assert is_adversarial(u, target, targeted=True, margin=1.0).tolist() == [True, False, True, False]
    assert is_adversarial(u, target, targeted=True, margin=3.0).tolist() == [False, False, True, False]


def test_the_margin_view_moves_only_the_goal_logit(linear_model, images):
    goal = torch.tensor([0, 1, 2, 0])
    assert with_margin(linear_model, goal, 0.0, targeted=False) is linear_model  # margin 0: the model itself
    with torch.no_grad():
        base = linear_model(images)
        up = MarginView(linear_model, goal, 2.5, targeted=False)(images)
        down = MarginView(linear_model, goal, 2.5, targeted=True)(images)
    shift = torch.nn.functional.one_hot(goal, 3) * 2.5
    assert torch.equal(up, base + shift) and torch.equal(down, base - shift)


@pytest.mark.parametrize("targeted", [False, True])
def test_mnd_continues_until_the_margin_is_met(linear_model, images, targeted, one_thread):
    config = config_for("mnd", targeted=targeted, **FAST)
    plain = attack.generate(linear_model, images, config=config)
    assert plain.success.all() and plain.margin == 0
    goal = plain.target_label if targeted else plain.true_label
    with torch.no_grad():
        reached = _lead(linear_model(plain.adversarial), goal, targeted=targeted)
    margin = float(reached.max()) + 1.0  # no image of the margin-0 run meets it
    strong = attack.generate(linear_model, images, config=config.replace(margin=margin))
    assert strong.success.all() and strong.margin == margin
    with torch.no_grad():
        final = _lead(linear_model(strong.adversarial), goal, targeted=targeted)
    assert bool((final >= margin).all())
    assert bool((strong.iterations > plain.iterations).all())


def test_margin_zero_is_the_paper_bit_for_bit(linear_model, images, one_thread):
    config = config_for("mnd", targeted=True, **FAST)
    default = attack.generate(linear_model, images, config=config)
    zero = attack.generate(linear_model, images, config=config.replace(margin=0.0))
    assert torch.equal(default.adversarial, zero.adversarial) and torch.equal(default.iterations, zero.iterations)
    via_methods = methods.run_method(linear_model, images, None, "mnd", targeted=True, margin=0.0, **FAST)
    assert torch.equal(via_methods.adversarial, default.adversarial)
    bim = anchors.run("bim", linear_model, images, eps=2 / 255, alpha=0.5 / 255)
    bim0 = methods.run_method(linear_model, images, None, "bim", margin=0.0, anchor_kwargs={"eps": 2 / 255,
                                                                                         "alpha": 0.5 / 255})
    assert torch.equal(bim.adversarial, bim0.adversarial) and torch.equal(bim.success, bim0.success)


def test_a_fixed_budget_anchor_judges_success_with_the_margin(linear_model, images, one_thread):
    res = anchors.run("bim", linear_model, images, eps=1 / 255, alpha=0.25 / 255, margin=30.0)
    assert res.attacked.all() and not res.success.any() and res.margin == 30.0  # 1/255 does not reach it
    assert all("not adversarial by a logit margin of 30 after 10 steps of BIM" in r for r in res.reason)
    easy = anchors.run("bim", linear_model, images, margin=1.0)
    with torch.no_grad():
        lead = _lead(linear_model(easy.adversarial), easy.true_label, targeted=False)
    assert torch.equal(easy.success, lead >= 1.0) and easy.success.any()


def test_margin_is_validated_everywhere(tmp_path):
    with pytest.raises(ValueError, match="margin"):
        AttackConfig(margin=-1.0)
    with pytest.raises(ValueError, match="margin"):
        AttackConfig(margin=math.inf)
    hp = tmp_path / "hp.toml"
    from importlib import resources

    packaged = resources.files("mnd.presets").joinpath("hparams.toml").read_text()
    assert "margin = 0.0" in packaged
    hp.write_text(packaged.replace("margin = 0.0", "margin = 2.5"))
    assert config_for("mnd", hparams=hp).margin == 2.5
    hp.write_text(packaged.replace("margin = 0.0", "margin = -2"))
    with pytest.raises(InputError, match="margin = -2: must be a number >= 0"):
        config_for("mnd", hparams=hp)
    assert load_preset("tiny").margin is None
    assert load_preset("tiny", ["margin=2"])._overrides()["margin"] == 2.0
    with pytest.raises(InputError, match="margin must be a number >= 0"):
        load_preset("tiny", ["margin=-1"])
