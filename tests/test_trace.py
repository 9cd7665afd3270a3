"""mnd.experiments.trace: per-iteration traces of Algorithm 1."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mnd.core import attack
from mnd.core.config import config_for
from mnd.experiments import trace

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("variant,targeted", [("mnd", False), ("l1_ssim", True), ("no_norm", True)])
def test_trace_stops_where_generate_stops(linear_model: nn.Module, images: torch.Tensor, variant: str,
                                          targeted: bool) -> None:
    config = config_for(variant, targeted=targeted, max_iter=300, step_size=1e-3)
    for x in images[:2]:
        steps = trace.run(linear_model, x, None, variant, targeted=targeted, max_iter=300, step_size=1e-3)
        result = attack.generate(linear_model, x[None], None, config=config)
        assert steps[0]["iteration"] == 0 and not steps[0]["adversarial"]
        assert steps[-1]["iteration"] == int(result.iterations[0])
        assert steps[-1]["adversarial"] == bool(result.success[0])
        assert [r["iteration"] for r in steps] == list(range(len(steps)))


def test_trace_is_cached(tmp_path: Path, linear_model: nn.Module, images: torch.Tensor) -> None:
    rows = trace.run(linear_model, images[0], None, "mnd", max_iter=20, step_size=1e-3)
    path = trace.write(tmp_path / "t.csv", rows)
    back = trace.read(path)
    assert [r["iteration"] for r in back] == [r["iteration"] for r in rows]
    assert back[-1]["psnr"] == pytest.approx(rows[-1]["psnr"], rel=1e-6)
    terms = trace.terms(images[0], images[0])
    assert terms["l1"] == 0 and terms["ssim"] == pytest.approx(1.0) and math.isinf(terms["psnr"])


def test_trace_under_amp_has_one_row_per_iteration(linear_model: nn.Module, images: torch.Tensor) -> None:
    from tests.test_attack import _Flatters

    model = _Flatters(linear_model, images[:1])  # each low-precision success is rejected in float32
    config = config_for("mnd", max_iter=300, step_size=1e-3, amp=True)
    rows = trace.run(model, images[0], None, "mnd", max_iter=300, step_size=1e-3, amp=True)
    result = attack.generate(model, images[:1], config=config)
    assert result.extras["float32_fallback"] == 1 and result.success.all()
    assert [r["iteration"] for r in rows] == list(range(int(result.iterations[0]) + 1))
    assert rows[-1]["adversarial"] and not any(r["adversarial"] for r in rows[:-1])


def test_trace_of_an_image_not_attacked_is_its_clean_row(linear_model: nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        logits = linear_model(images[:1])
    wrong = (int(logits.argmax(1)) + 1) % 3  # ground truth the model gets wrong
    rows = trace.run(linear_model, images[0], wrong, "mnd", max_iter=20)
    assert len(rows) == 1 and rows[0]["iteration"] == 0 and not rows[0]["adversarial"]
    assert rows[0]["goal"] == wrong and rows[0]["top_label"] == int(logits.argmax(1))
    assert rows[0]["goal_prob"] == pytest.approx(float(logits.softmax(1)[0, wrong]), rel=1e-5)
    assert rows[0]["l1"] == 0 and math.isinf(rows[0]["psnr"])


def test_trace_stops_on_non_finite_values(linear_model: nn.Module, images: torch.Tensor) -> None:
    class SqrtAtZero(nn.Module):  # finite logits, NaN gradient at Z = X (0 * inf)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return linear_model(x) + 0 * (x - images[:1]).abs().sqrt().sum(dim=(1, 2, 3))[:, None]

    with pytest.raises(FloatingPointError, match=r"^mnd: non-finite loss or gradient at iteration 0 in float32$"):
        trace.run(SqrtAtZero(), images[0], None, "mnd", max_iter=20)
