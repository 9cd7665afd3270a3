from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from mnd.core import losses


def test_non_targeted_eq3_by_hand():
    u = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    p = u.softmax(1)
    got = losses.adversarial_loss(u, torch.tensor([1, 0]), targeted=False)
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(p[0, 1].item() + 2.0)
    assert got[1].item() == pytest.approx(p[1, 0].item() + 0.0)
    # r is ignored by eq. (3)
    assert torch.equal(got, losses.adversarial_loss(u, torch.tensor([1, 0]), targeted=False, r=0.5))


def test_targeted_eq4_with_r_one_sixteenth():
    u = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [0.25, 0.75]
    got = losses.adversarial_loss(u, torch.tensor([1]), targeted=True, r=0.0625)
    assert got.item() == pytest.approx(-(0.75**0.0625), rel=1e-6)
    got0 = losses.adversarial_loss(u, torch.tensor([0]), targeted=True, r=0.0625)
    assert got0.item() == pytest.approx(-(0.25**0.0625), rel=1e-6)
    assert got.item() < got0.item()  # minimising pulls towards the target


def test_least_likely_target_eq5():
    u = torch.tensor([[3.0, -1.0, 0.5], [-2.0, 0.0, 1.0]])
    assert losses.least_likely_target(u).tolist() == [1, 0]


def test_adversarial_loss_rejects_bad_shape():
    with pytest.raises(ValueError, match="logits"):
        losses.adversarial_loss(torch.zeros(3), torch.tensor([0]), targeted=False)


def test_deviation_norms_eq8_eq9():
    x = torch.zeros(2, 1, 2, 2)
    z = x.clone()
    z[0, 0, 0, 0], z[0, 0, 1, 1] = 0.3, -0.4
    assert losses.deviation_loss(z, x, norm="l1", reduction="sum").tolist() == pytest.approx([0.7, 0.0])
    assert losses.deviation_loss(z, x, norm="l1").tolist() == pytest.approx([0.7 / 4, 0.0])
    # the three l2 forms: literal eq. (9), root mean square (default), mean of squares
    assert losses.deviation_loss(z, x, norm="l2", l2_form="sum").tolist() == pytest.approx([0.5, 0.0])
    assert losses.deviation_loss(z, x, norm="l2").tolist() == pytest.approx([math.sqrt(0.25 / 4), 0.0])
    assert losses.deviation_loss(z, x, norm="l2", l2_form="mse").tolist() == pytest.approx([0.25 / 4, 0.0])
    # the l2 norms ignore the l1 reduction
    assert torch.equal(
        losses.deviation_loss(z, x, norm="l2", reduction="sum"), losses.deviation_loss(z, x, norm="l2")
    )
    with pytest.raises(ValueError, match="norm"):
        losses.deviation_loss(z, x, norm="l3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="l2_form"):
        losses.deviation_loss(z, x, norm="l2", l2_form="mean")  # type: ignore[arg-type]


def test_l2_forms_reach_the_gradient_term_and_eq7():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    z = (x + 0.05 * torch.randn(2, 3, 8, 8, generator=g)).clamp(0, 1)
    diff = losses.sobel_magnitude(z) - losses.sobel_magnitude(x)
    mse = diff.pow(2).flatten(1).mean(1)
    assert torch.allclose(losses.gradient_loss(z, x, norm="l2", l2_form="mse"), mse)
    assert torch.allclose(losses.gradient_loss(z, x, norm="l2", l2_form="rms"), mse.sqrt())
    assert torch.allclose(losses.gradient_loss(z, x, norm="l2", l2_form="sum"), (mse * diff[0].numel()).sqrt())
    both = losses.perceptual_loss(z, x, betas=(1.0, 0.0, 2.0), deviation="l2", gradient="l2", l2_form="mse")
    expect = losses.deviation_loss(z, x, norm="l2", l2_form="mse") + 2.0 * mse
    assert torch.allclose(both, expect)


def test_sobel_eq15_17_by_hand():
    x = torch.zeros(1, 2, 5, 5)
    x[0, 0, :, 3:] = 1.0  # vertical edge in channel 0 only
    g = losses.sobel_magnitude(x)
    assert g.shape == x.shape
    # Column 2 sees 0 on its left and 1 on its right: |Gx| = 1 + 2 + 1 = 4.
    assert g[0, 0, 2, 2].item() == pytest.approx(4.0, abs=1e-4)
    assert g[0, 0, 2, 0].item() == pytest.approx(0.0, abs=1e-3)
    assert g[0, 1].max().item() == pytest.approx(math.sqrt(losses.SOBEL_EPS))
    # Gy of a horizontal edge, by the second kernel.
    y = x.transpose(2, 3)
    assert losses.sobel_magnitude(y)[0, 0, 2, 2].item() == pytest.approx(4.0, abs=1e-4)


def test_sobel_gradcheck():
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(losses.sobel_magnitude, (x,))


SOBEL_AS_PRINTED = torch.tensor([
    [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],  # eq. (15)
    [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],  # eq. (16)
])


def _sobel_by_convolution(x: torch.Tensor) -> torch.Tensor:
    """Eqs. (15)-(17) as a grouped convolution with the printed kernels, through autograd."""
    c = x.shape[1]
    kernel = SOBEL_AS_PRINTED.to(x.dtype).unsqueeze(1).repeat(c, 1, 1, 1)
    g = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    return (g[:, 0::2].pow(2) + g[:, 1::2].pow(2) + losses.SOBEL_EPS).sqrt()


def test_sobel_equals_the_printed_kernels_in_value_and_gradient():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 9, 12, generator=g, dtype=torch.float64)
    weights = torch.randn(2, 3, 9, 12, generator=g, dtype=torch.float64)
    ours = x.clone().requires_grad_(True)
    printed = x.clone().requires_grad_(True)
    a, b = losses.sobel_magnitude(ours), _sobel_by_convolution(printed)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)
    (ga,) = torch.autograd.grad((a * weights).sum(), ours)
    (gb,) = torch.autograd.grad((b * weights).sum(), printed)
    assert torch.allclose(ga, gb, rtol=0, atol=1e-10)
    assert gb.abs().max() > 0.1


def test_cached_ssim_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 2, 12, 13, generator=g, dtype=torch.float64)
    z = (x + 0.05 * torch.randn(2, 2, 12, 13, generator=g, dtype=torch.float64)).clamp(0, 1).requires_grad_(True)
    ref = losses.CleanReference(x)
    assert torch.autograd.gradcheck(ref.ssim, (z,))


def test_cached_ssim_stays_float32_under_autocast():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 24, 24, generator=g)
    z = (x + 0.02 * torch.randn(2, 3, 24, 24, generator=g)).clamp(0, 1)
    ref = losses.CleanReference(x)
    plain_z = z.clone().requires_grad_(True)
    plain = ref.ssim(plain_z)
    (plain_grad,) = torch.autograd.grad(plain.sum(), plain_z)
    auto_z = z.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ref.ssim(auto_z)
    (auto_grad,) = torch.autograd.grad(auto.sum(), auto_z)
    assert auto.dtype == torch.float32 and auto_grad.dtype == torch.float32
    assert torch.equal(auto, plain) and torch.equal(auto_grad, plain_grad)


def test_ssim_matches_skimage_gaussian_ssim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    z = (x + 0.05 * torch.randn(1, 3, 32, 32, generator=g)).clamp(0, 1)
    ours = losses.ssim_similarity(z, x).item()
    ref = structural_similarity(
        z[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy(),
        channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    )
    assert ours == pytest.approx(ref, abs=1e-5)
    assert losses.ssim_similarity(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_perceptual_loss_eq7_is_the_weighted_sum():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    z = (x + 0.02 * torch.randn(2, 3, 16, 16, generator=g)).clamp(0, 1)
    dev = losses.deviation_loss(z, x)
    sim = losses.ssim_similarity(z, x)
    grad = losses.gradient_loss(z, x)
    got = losses.perceptual_loss(z, x, betas=(2.0, 0.5, 3.0))
    assert got.shape == (2,)
    assert torch.allclose(got, 2.0 * dev - 0.5 * sim + 3.0 * grad)
    assert torch.allclose(losses.perceptual_loss(z, x, betas=(0, 0, 0)), torch.zeros(2))
    l2 = losses.perceptual_loss(z, x, betas=(1, 0, 1), deviation="l2", gradient="l2")
    assert torch.allclose(l2, losses.deviation_loss(z, x, norm="l2") + losses.gradient_loss(z, x, norm="l2"))
    # the cached clean statistics give the same value
    cached = losses.perceptual_loss(z, x, betas=(2.0, 0.5, 3.0), reference=losses.CleanReference(x))
    assert torch.allclose(got, cached, atol=1e-6)


def test_perceptual_loss_is_zero_at_the_clean_image_up_to_ssim():
    x = torch.rand(1, 3, 16, 16)
    assert losses.perceptual_loss(x, x, betas=(1.0, 1.0, 1.0)).item() == pytest.approx(-1.0, abs=1e-5)


@pytest.mark.parametrize("size", [(2, 3, 32, 32), (1, 3, 64, 48)])
def test_cached_separable_ssim_equals_piq_in_value_and_gradient(size):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(*size, generator=g)
    z0 = (x + 0.03 * torch.randn(*size, generator=g)).clamp(0, 1)
    z1 = z0.clone().requires_grad_(True)
    z2 = z0.clone().requires_grad_(True)
    ref_value = losses.ssim_similarity(z1, x)
    ours = losses.CleanReference(x).ssim(z2)
    assert torch.allclose(ours, ref_value, atol=1e-6, rtol=0)
    (g1,) = torch.autograd.grad(ref_value.sum(), z1)
    (g2,) = torch.autograd.grad(ours.sum(), z2)
    assert torch.allclose(g1, g2, atol=1e-6, rtol=0)
    assert g1.abs().max() > 1e-4, "the gradient compared must not be trivially zero"


def test_clean_reference_subset_keeps_rows():
    x = torch.rand(3, 3, 16, 16)
    z = (x + 0.02).clamp(0, 1)
    ref = losses.CleanReference(x)
    _ = ref.sobel
    sub = ref.subset(torch.tensor([2, 0]))
    assert torch.allclose(sub.ssim(z[[2, 0]]), ref.ssim(z)[[2, 0]])
    assert torch.equal(sub.sobel, losses.sobel_magnitude(x)[[2, 0]])


def test_cached_ssim_in_either_memory_order_and_for_no_images():
    """Channels-last Z gives the same value and gradient, each gradient in its Z's order; 0 images is no error."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 16, 16, generator=g)
    z = (x + 0.03 * torch.randn(2, 3, 16, 16, generator=g)).clamp(0, 1)
    ref = losses.CleanReference(x)
    grads = []
    for order in (torch.contiguous_format, torch.channels_last):
        zz = z.contiguous(memory_format=order).requires_grad_(True)
        value = ref.ssim(zz)
        (grad,) = torch.autograd.grad(value.sum(), zz)
        assert grad.is_contiguous(memory_format=order)
        grads.append((value, grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    none = losses.CleanReference(x[:0])
    z0 = z[:0].clone().requires_grad_(True)
    value = none.ssim(z0)
    assert value.shape == (0,)
    assert torch.autograd.grad(value.sum(), z0)[0].shape == z0.shape


@pytest.mark.parametrize("l2_form", ["rms", "mse", "sum"])
def test_l2_norms_have_a_finite_gradient_at_the_clean_image(l2_form):
    x = torch.rand(2, 3, 8, 8)
    z = x.clone().requires_grad_(True)
    loss = losses.perceptual_loss(z, x, betas=(1.0, 0.0, 1.0), deviation="l2", gradient="l2", l2_form=l2_form)
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert torch.isfinite(g).all()
    z2 = (x + 0.01).clamp(0, 1).requires_grad_(True)
    (g2,) = torch.autograd.grad(losses.deviation_loss(z2, x, norm="l2", l2_form=l2_form).sum(), z2)
    assert torch.isfinite(g2).all() and g2.abs().sum() > 0


def _targeted_as_printed(u: torch.Tensor, target: torch.Tensor, r: float) -> torch.Tensor:
    """Eq. (4) written the naive way, softmax(u) ** r: an infinite gradient where p underflows."""
    return -u.softmax(1).gather(1, target.view(-1, 1)).squeeze(1).pow(r)


def test_targeted_loss_is_finite_with_an_underflowing_probability():
    # the target's logit is 1e4 below the others: its probability is exactly 0 in float32
    u = torch.tensor([[0.0, -1e4, 3.0]], requires_grad=True)
    target = torch.tensor([1])
    (naive_grad,) = torch.autograd.grad(_targeted_as_printed(u, target, 0.0625).sum(), u)
    assert not torch.isfinite(naive_grad).all(), "the naive form should fail here, or the test proves nothing"
    loss = losses.adversarial_loss(u, target, targeted=True, r=0.0625)
    (grad,) = torch.autograd.grad(loss.sum(), u)
    assert loss.item() == 0.0 and torch.isfinite(grad).all()
    # where the naive form is finite, the two agree in value and gradient
    g = torch.Generator().manual_seed(0)
    v = (4 * torch.randn(8, 10, generator=g)).requires_grad_(True)
    t = torch.randint(0, 10, (8,), generator=g)
    naive = _targeted_as_printed(v, t, 0.0625)
    ours = losses.adversarial_loss(v, t, targeted=True, r=0.0625)
    assert torch.allclose(ours, naive, rtol=1e-5, atol=0)
    (g_naive,) = torch.autograd.grad(naive.sum(), v)
    (g_ours,) = torch.autograd.grad(ours.sum(), v)
    assert torch.allclose(g_ours, g_naive, rtol=1e-4, atol=1e-7)


def test_targeted_loss_gradcheck():
    u = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 4, 2])
    assert torch.autograd.gradcheck(lambda v: losses.adversarial_loss(v, t, targeted=True, r=0.0625), (u,))


def test_ssim_global_eqs_10_14_as_printed_by_hand():
    c1, c2 = 0.01**2, 0.03**2
    # x = [0, 1, 0, 1]: mu = 1/2, sigma^2 = (4 * 1/4) / (N - 1) = 1/3
    x = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 2, 2)
    same = (2 * 0.25 + c1) * (1 / 3 + c2) / ((0.25 + 0.25 + c1) * (2 / 3 + c2))
    assert losses.ssim_global(x, x).item() == pytest.approx(same, rel=1e-6)
    assert losses.ssim_global(x, x).item() == pytest.approx(0.5, abs=0.001), "as printed, SSIM(X, X) is about 1/2"
    assert losses.ssim_global(x, x, covariance_factor=2).item() == pytest.approx(1.0, rel=1e-6)
    # z = [1, 0]^T against x = [0, 1]^T, over two channels: N = 2, N - 1 = 1
    x2 = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    z2 = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    # mu = 1/2 each, sigma^2 = 1/2 each, sigma_zx = -1/2
    expect = (2 * 0.25 + c1) * (-0.5 + c2) / ((0.5 + c1) * (1.0 + c2))
    assert losses.ssim_global(z2, x2).item() == pytest.approx(expect, rel=1e-6)
    # a batch gives one value per image, each as if alone
    both = losses.ssim_global(torch.cat([x, x.flip(-1)]), torch.cat([x, x]))
    assert both.shape == (2,) and both[0].item() == pytest.approx(same, rel=1e-6)
    with pytest.raises(ValueError, match="two values"):
        losses.ssim_global(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
    with pytest.raises(ValueError, match="one shape"):
        losses.ssim_global(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 1))


def test_ssim_global_with_factor_two_matches_a_one_window_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 12, 12, generator=g, dtype=torch.float64)
    z = (x + 0.1 * torch.randn(1, 3, 12, 12, generator=g, dtype=torch.float64)).clamp(0, 1)
    a, b = z.flatten().numpy(), x.flatten().numpy()
    cov = np.cov(a, b)  # N - 1 normalisation
    c1, c2 = 0.01**2, 0.03**2
    ref = (2 * a.mean() * b.mean() + c1) * (2 * cov[0, 1] + c2)
    ref /= (a.mean() ** 2 + b.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)
    assert losses.ssim_global(z, x, covariance_factor=2).item() == pytest.approx(ref, rel=1e-9)
