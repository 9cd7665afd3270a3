from __future__ import annotations

import pytest
import torch

from mnd.core import attack, metrics
from mnd.core.attack import generate
from mnd.core.config import VARIANTS, AttackConfig, config_for
from mnd.core.pixels import quantize
from mnd.errors import InputError

FAST = dict(max_iter=300, step_size=1e-3)


def _on_grid(x: torch.Tensor) -> bool:
    return torch.equal(x, quantize(x))


@pytest.mark.parametrize("straight_through", [False, True])
def test_non_targeted_succeeds_on_8bit_images_and_stops_at_success(linear_model, images, straight_through):
    cfg = config_for("mnd", straight_through=straight_through, **FAST)
    res = generate(linear_model, images, config=cfg)
    assert res.attacked.all() and res.success.all()
    assert _on_grid(res.adversarial)
    with torch.no_grad():
        pred = linear_model(res.adversarial).argmax(1)
    assert torch.equal(pred, res.adv_label)
    assert (pred != res.clean_label).all()
    # stopping at success: one step fewer would still be classified correctly (compared
    # alone with alone: a batch of another size may round differently on another CPU)
    for i in range(len(images)):
        single = generate(linear_model, images[i : i + 1], config=cfg)
        k = int(single.iterations[0])
        assert single.success.item() and 0 < k < cfg.max_iter
        earlier = generate(linear_model, images[i : i + 1], config=cfg.replace(max_iter=k - 1))
        assert not earlier.success.item()


def test_region_keeps_every_other_pixel_clean(linear_model, images):
    cfg = config_for("mnd", **FAST)
    region = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    region[..., 1:15, 2:12] = True  # one region for the whole batch
    res = generate(linear_model, images, config=cfg, region=region)
    assert res.success.all() and _on_grid(res.adversarial)
    changed = (res.adversarial != quantize(images)).any(1)
    assert changed.any() and not (changed & ~region[:, 0]).any()
    rows = torch.zeros(len(images), 1, 16, 16, dtype=torch.bool)
    rows[1, ..., :8, :] = True  # one per image: image 0 may not change at all
    res = generate(linear_model, images[:2], config=cfg.replace(max_iter=5), region=rows[:2])
    assert torch.equal(res.adversarial[0], quantize(images[0])) and not res.success[0]
    with pytest.raises(ValueError, match="region must have shape"):
        generate(linear_model, images, config=cfg, region=region[..., :8])


def test_batch_equals_single(linear_model, images):
    cfg = config_for("mnd", **FAST)
    batch = generate(linear_model, images, config=cfg)
    iters = set(batch.iterations.tolist())
    assert len(iters) > 1, "the images should need different numbers of iterations"
    for i in range(len(images)):
        single = generate(linear_model, images[i : i + 1], config=cfg)
        assert single.iterations.item() == batch.iterations[i].item()
        assert single.success.item() == batch.success[i].item()
        # Equal here; but BLAS may pick another kernel for another batch size, and Adam
        # turns rounding-level differences into whole steps where a gradient is near zero,
        # so on another CPU some values may differ: by rounding noise next to the perturbation.
        one, many = single.adversarial, batch.adversarial[i : i + 1]
        assert torch.equal(one, many) or (metrics.psnr(one, many) > metrics.psnr(many, images[i : i + 1]) + 10).all()


def test_targeted_reaches_least_likely_class(linear_model, images):
    cfg = config_for("mnd", targeted=True, max_iter=600, step_size=2e-3)
    res = generate(linear_model, images, config=cfg)
    with torch.no_grad():
        clean_logits = linear_model(images)
    assert torch.equal(res.target_label, clean_logits.argmin(1))
    assert res.success.all()
    assert torch.equal(res.adv_label, res.target_label)


def test_ground_truth_misclassified_is_not_attacked(linear_model, images):
    with torch.no_grad():
        clean = linear_model(images).argmax(1)
    labels = clean.clone()
    labels[1] = (clean[1] + 1) % 3  # the model gets image 1 wrong
    res = generate(linear_model, images, labels, config=config_for("mnd", **FAST))
    assert res.attacked.tolist() == [True, False, True, True]
    assert not res.success[1] and res.iterations[1] == 0
    assert torch.equal(res.adversarial[1], images[1])
    assert res.success[[0, 2, 3]].all()


def test_failures_keep_their_best_attempt(linear_model, images):
    res = generate(linear_model, images, config=config_for("mnd", max_iter=3, step_size=1e-3))
    assert not res.success.any()
    assert (res.iterations == 3).all()
    assert _on_grid(res.adversarial)
    assert not torch.equal(res.adversarial, images), "the best attempt should differ from the clean image"


def test_plain_gradient_descent_option(linear_model, images):
    cfg = config_for("no_norm", optimizer="gd", step_size=1.0, max_iter=200)
    res = generate(linear_model, images, config=cfg)
    assert res.success.all()


def test_presets_match_the_paper():
    assert config_for("mnd").betas == (100.0, 100.0, 100.0)
    t = config_for("mnd", targeted=True)
    assert (t.r, t.betas) == (0.0625, (2.0, 0.1, 2.0))
    f = config_for("mnd", task="faces", targeted=True)
    assert (f.r, f.betas) == (0.0625, (1.0, 0.1, 1.0))
    assert config_for("mnd", task="faces").betas == (100.0, 100.0, 100.0)
    assert (config_for("mnd").step_size, config_for("mnd").max_iter) == (1e-4, 1000)


def test_variants_mask_the_terms():
    assert list(VARIANTS) == ["no_norm", "l2", "l1", "ssim", "l2_ssim", "l1_ssim", "mnd"]
    expect = {
        "no_norm": ((0, 0, 0), "l1"),
        "l1": ((100, 0, 0), "l1"),
        "l2": ((100, 0, 0), "l2"),
        "ssim": ((0, 100, 0), "l1"),
        "l2_ssim": ((100, 100, 0), "l2"),
        "l1_ssim": ((100, 100, 0), "l1"),
        "mnd": ((100, 100, 100), "l1"),
    }
    for name, (betas, dev) in expect.items():
        cfg = config_for(name)
        assert cfg.betas == tuple(map(float, betas)) and cfg.deviation == dev, name


def test_bad_configs_and_files(tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        AttackConfig(optimizer="sgd")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown MND variant"):
        config_for("nope")
    bad = tmp_path / "h.toml"
    bad.write_text("[defaults\n")
    with pytest.raises(InputError, match="not valid TOML"):
        config_for("mnd", hparams=bad)
    bad.write_text("[defaults]\n")
    with pytest.raises(InputError, match=r"missing the \[tasks\] table"):
        config_for("mnd", hparams=bad)


def test_user_hparams_file_changes_the_preset(tmp_path):
    from importlib import resources

    text = resources.files("mnd.presets").joinpath("hparams.toml").read_text()
    custom = tmp_path / "mine.toml"
    custom.write_text(text.replace("max_iter = 1000", "max_iter = 42"))
    assert config_for("mnd", hparams=custom).max_iter == 42


@pytest.mark.slow
def test_batch_and_single_agree_on_a_real_model(effnet, photos):
    from pathlib import Path

    from mnd import models
    from mnd.data.imageio import LoadedImage
    from mnd.data.prepare import prepare_image as prepare

    spec = models.spec("efficientnet_lite0")
    x = torch.stack([prepare(LoadedImage(Path(k), v), spec) for k, v in photos.items()])
    cfg = config_for("mnd")
    batch = generate(effnet, x, config=cfg)
    assert batch.success.all()
    for i in range(len(x)):
        single = generate(effnet, x[i : i + 1], config=cfg)
        assert single.success.item() and single.iterations.item() == batch.iterations[i].item()
        # Batched convolutions round differently (logits differ by ~1e-6), and Adam turns
        # rounding into whole steps where a gradient is near zero, so some 8-bit values
        # differ (how many depends on the CPU). What holds on any CPU: the same outcome and
        # count, and a difference that is rounding noise next to the perturbation.
        clean_psnr = metrics.psnr(batch.adversarial[i : i + 1], x[i : i + 1])
        assert metrics.psnr(single.adversarial, x[i : i + 1]).item() == pytest.approx(clean_psnr.item(), abs=0.2)
        assert metrics.psnr(single.adversarial, batch.adversarial[i : i + 1]).item() > clean_psnr.item() + 10


def test_options_channels_last_and_amp_keep_success_honest(linear_model, images):
    base = config_for("mnd", **FAST)
    ref = generate(linear_model, images, config=base)
    cl = generate(linear_model, images, config=base.replace(channels_last=True))
    # Another memory layout sums in another order, and Adam turns rounding-level gradient
    # differences into whole steps where a gradient is near zero: on one AMD EPYC 7% of the
    # 8-bit values differ, by up to 2 levels (a float64 run differs by up to 3). What holds
    # on any CPU: the same outcome and iteration counts (even in float64), and images whose
    # difference is rounding noise next to the perturbation itself.
    assert torch.equal(cl.iterations, ref.iterations) and torch.equal(cl.success, ref.success)
    assert _on_grid(cl.adversarial)
    ref_psnr, cl_psnr = metrics.psnr(ref.adversarial, images), metrics.psnr(cl.adversarial, images)
    assert torch.allclose(cl_psnr, ref_psnr, atol=0.1), "the perturbations should have the same size"
    assert (metrics.psnr(cl.adversarial, ref.adversarial) > ref_psnr + 10).all()
    amp = generate(linear_model, images, config=base.replace(amp=True))  # bfloat16 on CPU
    with torch.no_grad():
        pred = linear_model(amp.adversarial).argmax(1)
    assert torch.equal(amp.success, pred != amp.clean_label), "success must be what float32 says"
    assert amp.success.any()
    assert torch.isfinite(amp.adversarial).all() and _on_grid(amp.adversarial)


# --- honesty: never towards the true label, never an unchanged success ------------------


def test_one_class_model_and_tied_outputs_are_not_attacked(images):
    from tests.conftest import Linear

    one_class = Linear(torch.randn(1, 3 * 16 * 16), torch.zeros(1)).eval()
    for targeted in (False, True):
        res = generate(one_class, images, config=config_for("mnd", targeted=targeted, **FAST))
        assert not res.attacked.any() and not res.success.any() and (res.iterations == 0).all()
        assert torch.equal(res.adversarial, images)
        assert all("single class" in r for r in res.reason)
    # three classes with equal outputs: the eq. (5) target is the predicted (true) class
    tied = Linear(torch.zeros(3, 3 * 16 * 16), torch.zeros(3)).eval()
    res = generate(tied, images, config=config_for("mnd", targeted=True, **FAST))
    assert torch.equal(res.target_label, res.true_label)
    assert not res.attacked.any() and not res.success.any()
    assert all("target" in r and "true label" in r for r in res.reason)


class _Fickle(torch.nn.Module):
    """A model that changes its mind after its first call, whatever the input (think of dropout left on)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.inner(x)
        return logits if self.calls == 1 else logits.roll(1, dims=1)


def test_an_unchanged_output_is_never_a_success(linear_model, images):
    # straight-through checks the clean image at step 0: the fickle model calls it adversarial
    res = generate(_Fickle(linear_model), images, config=config_for("mnd", straight_through=True, **FAST))
    assert res.attacked.all() and torch.equal(res.adversarial, images)
    assert (res.adv_label != res.true_label).all(), "the model does call the output adversarial"
    assert not res.success.any()
    assert res.reason == [attack.UNCHANGED] * len(images)


def test_reasons_for_failures_and_results_built_without_them(linear_model, images):
    res = generate(linear_model, images, config=config_for("mnd", max_iter=3, step_size=1e-3))
    assert res.reason == ["not adversarial after 3 iterations"] * 4
    ok = generate(linear_model, images, config=config_for("mnd", **FAST))
    assert ok.reason == [""] * 4
    bare = attack.AttackResult(
        adversarial=images, success=ok.success, attacked=ok.attacked, iterations=ok.iterations,
        clean_label=ok.clean_label, adv_label=ok.adv_label, true_label=ok.true_label, target_label=None, seconds=0.0,
    )
    assert bare.reason == [""] * 4
    with pytest.raises(ValueError, match="reasons"):
        attack.AttackResult(**{**bare.__dict__, "reason": ["x"]})


# --- non-finite values never become outputs -----------------------------------------------


class _Breaks(torch.nn.Module):
    """Logits turn non-finite (all ``value``) once the input is ``levels`` 8-bit levels from
    the clean images (or at once with ``levels=0``); only under autocast with
    ``only_autocast``, like a float16 overflow. The classes are rolled so that the clean
    class is not 0, where argmax puts an all-NaN row: a NaN would look adversarial."""

    def __init__(self, inner: torch.nn.Module, clean: torch.Tensor, value: float, *, levels: float = 2.0,
                 only_autocast: bool = False) -> None:
        super().__init__()
        self.inner, self.clean, self.value = inner, clean, value
        self.levels, self.only_autocast = levels, only_autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x).roll(1, dims=1)
        if self.only_autocast and not torch.is_autocast_enabled(x.device.type):
            return logits
        distance = torch.stack([(x - c).abs().amax(dim=(1, 2, 3)) for c in self.clean]).amin(0) * 255
        far = ~(distance < self.levels - 0.5)  # NaN inputs are far too
        return torch.where(far.view(-1, 1), torch.full_like(logits, self.value), logits)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("straight_through", [False, True])
def test_non_finite_logits_stop_the_image_as_a_failure(linear_model, images, value, straight_through):
    model = _Breaks(linear_model, images, value)
    res = generate(model, images, config=config_for("mnd", straight_through=straight_through, **FAST))
    assert res.attacked.all()
    assert torch.isfinite(res.adversarial).all() and _on_grid(res.adversarial)
    assert not res.success.any()
    assert all("non-finite" in r and "float32" in r for r in res.reason), res.reason
    # the outputs are the last finite attempts: less than two levels from the clean images
    assert ((res.adversarial - images).abs().amax() * 255).round().item() <= 1


def test_non_finite_gradient_stops_at_the_clean_image(linear_model, images):
    class SqrtAtZero(torch.nn.Module):  # finite logits, NaN gradient at Z = X (0 * inf)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return linear_model(x) + 0 * (x - images).abs().sqrt().sum(dim=(1, 2, 3))[:, None]

    res = generate(SqrtAtZero(), images, config=config_for("mnd", **FAST))
    assert not res.success.any() and torch.equal(res.adversarial, images)
    assert res.reason == ["non-finite loss or gradient at iteration 0 in float32: stopped as a failure "
                          "(best finite attempt kept)"] * 4


@pytest.mark.parametrize("straight_through", [False, True])
def test_amp_non_finite_from_the_start_falls_back_to_float32(linear_model, images, straight_through):
    cfg = config_for("mnd", straight_through=straight_through, **FAST)
    model = _Breaks(linear_model, images, float("inf"), levels=0, only_autocast=True)
    ref = generate(model, images, config=cfg)  # float32: the model never breaks
    res = generate(model, images, config=cfg.replace(amp=True))
    # every image continued in float32 from its clean start: exactly the float32 run
    assert res.extras["float32_fallback"] == 4
    assert torch.equal(res.iterations, ref.iterations) and torch.equal(res.adversarial, ref.adversarial)
    assert res.success.all() and res.reason == [""] * 4


def test_amp_non_finite_mid_run_continues_in_float32(linear_model, images):
    model = _Breaks(linear_model, images, float("nan"), levels=2, only_autocast=True)
    res = generate(model, images, config=config_for("mnd", amp=True, **FAST))
    assert res.extras["float32_fallback"] == 4
    assert torch.isfinite(res.adversarial).all() and res.success.all()
    with torch.no_grad():
        assert (model(res.adversarial).argmax(1) != res.clean_label).all()
    assert ((res.adversarial - images).abs().amax(dim=(1, 2, 3)) * 255 >= 1.5).all(), "they went on past the break"


class _Flatters(torch.nn.Module):
    """Under autocast, tells every changed image it is adversarial (the low-precision
    path disagrees with float32 near the boundary, exaggerated)."""

    def __init__(self, inner: torch.nn.Module, clean: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.clean = inner, clean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        if not torch.is_autocast_enabled(x.device.type):
            return logits
        changed = torch.stack([(x != c).flatten(1).any(1) for c in self.clean]).all(0)
        top = logits.argmax(1)
        lie = logits.clone()
        lie[torch.arange(len(x)), top] = logits.amin(1) - 10  # the top class drops to the bottom
        return torch.where(changed.view(-1, 1), lie, logits)


@pytest.mark.parametrize("straight_through", [False, True])
def test_amp_successes_are_rechecked_in_float32_and_keep_iterating(linear_model, images, straight_through):
    cfg = config_for("mnd", straight_through=straight_through, amp=True, **FAST)
    res = generate(_Flatters(linear_model, images), images, config=cfg)
    with torch.no_grad():
        pred = linear_model(res.adversarial).argmax(1)
    assert res.extras["float32_fallback"] == 4, "every image was flattered and then re-checked"
    assert res.success.all() and torch.equal(res.success, pred != res.clean_label)
    assert res.reason == [""] * 4
    # they went on past the first changed 8-bit image, where the flattering check stopped them
    first_change = generate(linear_model, images, config=cfg.replace(amp=False, max_iter=2))
    assert not first_change.success.any() and (res.iterations > 2).all()


# --- hyper-parameter files -------------------------------------------------------------


def _hparams(tmp_path, old: str, new: str, name: str = "mine.toml"):
    from importlib import resources

    text = resources.files("mnd.presets").joinpath("hparams.toml").read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("step_size = 1e-4", "step_sise = 1e-4", r"unknown key 'step_sise' in \[defaults\]; known: step_size, max_iter"),
        ("r = 0.0625", "r = 0.0625\nbeta = 1", r"unknown key 'beta' in \[tasks.imagenet.targeted\]; known: betas, r"),
        ('label = "MND"', 'lable = "MND"', r"unknown key 'lable' in \[variants.mnd\]"),
        ("[tasks.faces.targeted]", "[tasks.faces.targetted]", r"unknown key 'targetted' in \[tasks.faces\]"),
        ("[tasks.faces.targeted]", "[tasks.face.targeted]", r"unknown key 'face' in \[tasks\]"),
        ("betas = [2.0, 0.1, 2.0]\n", "", r"\[tasks.imagenet.targeted\] has no betas"),
        ("betas = [2.0, 0.1, 2.0]", "betas = [2.0, 0.1]", r"\[tasks.imagenet.targeted\] betas = \[2.0, 0.1\]: must be three"),
        ("betas = [2.0, 0.1, 2.0]", 'betas = [2.0, "a", 2.0]', r"betas = \[2.0, 'a', 2.0\]: must be three numbers"),
        ("r = 0.0625", "r = -1", r"\[tasks.imagenet.targeted\] r = -1: must be a number > 0"),
        ('optimizer = "adam"', 'optimizer = "sgd"', r"\[defaults\] optimizer = 'sgd': must be one of 'adam', 'gd'"),
        ('reduction = "mean"', 'reduction = "avg"', r"\[defaults\] reduction = 'avg': must be one of 'mean', 'sum'"),
        ('l2_form = "rms"', 'l2_form = "l2"', r"\[defaults\] l2_form = 'l2': must be one of 'rms', 'mse', 'sum'"),
        ("max_iter = 1000", "max_iter = -5", r"\[defaults\] max_iter = -5: must be an integer from 1 to 1000000"),
        ("max_iter = 1000", "max_iter = 10.5", r"max_iter = 10.5: must be an integer"),
        ("step_size = 1e-4", "step_size = 0", r"\[defaults\] step_size = 0: must be a number > 0"),
        ("straight_through = false", 'straight_through = "no"', r"straight_through = 'no': must be true or false"),
        ('deviation = "l1"\ngradient = "l1"', 'deviation = "l3"\ngradient = "l1"', r"\[variants.mnd\] deviation = 'l3'"),
        ('terms = ["deviation"]', 'terms = ["devation"]', r"\[variants.l2\] terms = \['devation'\]"),
        ("[defaults]", "[defaults]\n[extra]", r"unknown key 'extra' in \[top level\]"),
    ],
)
def test_hparams_file_problems_name_the_key_and_the_file(tmp_path, old, new, message):
    path = _hparams(tmp_path, old, new)
    with pytest.raises(InputError, match=message) as info:
        config_for("mnd", hparams=path)
    assert info.value.where == str(path) and str(info.value).startswith(f"{path}: ")


def test_l2_form_from_the_file_and_from_overrides(tmp_path):
    assert config_for("l2").l2_form == "rms"
    path = _hparams(tmp_path, 'l2_form = "rms"', 'l2_form = "mse"')
    assert config_for("l2", hparams=path).l2_form == "mse"
    assert config_for("l2", hparams=path, l2_form="sum").l2_form == "sum"
    with pytest.raises(ValueError, match="l2_form"):
        AttackConfig(l2_form="mean")  # type: ignore[arg-type]
    # the objective uses it
    from mnd.core import losses

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    z = (x + 0.01 * torch.randn(2, 3, 16, 16, generator=g)).clamp(0, 1)
    ref = losses.CleanReference(x)
    goal = torch.tensor([0, 1])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 3))
    values = {}
    for form in ("rms", "mse", "sum"):
        cfg = config_for("l2", l2_form=form)
        loss, logits = attack.objective(model, z, ref, goal, cfg)
        adv = losses.adversarial_loss(logits, goal, targeted=False)
        values[form] = (loss - adv) / 100
    mse = (z - x).pow(2).flatten(1).mean(1)
    assert torch.allclose(values["mse"], mse, rtol=1e-4)
    assert torch.allclose(values["rms"], mse.sqrt(), rtol=1e-4)
    assert torch.allclose(values["sum"], (mse * 3 * 16 * 16).sqrt(), rtol=1e-4)


# --- eq. (21) and the observer hook -------------------------------------------------------


def test_non_finite_rows_are_exactly_the_rows_with_a_nan_or_an_inf():
    t = torch.zeros(5, 2, 3, 3)
    t[0, 1, 2, 2] = float("nan")
    t[2, 0, 0, 0] = float("inf")
    t[3, 0, 0, 0], t[3, 1, 1, 1] = float("inf"), float("-inf")  # their sum is NaN
    t[4] = 3e38  # finite values whose float32 sum would overflow: still finite
    assert attack._non_finite(t).tolist() == [True, False, True, True, False]
    loss = torch.tensor([0.0, float("nan"), 0.0, 0.0, 0.0])
    assert attack._non_finite(loss, t).tolist() == [True, True, True, True, False]


def test_descent_step_is_eq_21_projected_and_adam_is_per_image():
    z = torch.tensor([0.5, 0.5, 0.5, 0.125]).view(1, 1, 2, 2)
    grad = torch.tensor([1.0, -1.0, 4.0, 0.0]).view(1, 1, 2, 2)
    # Z - alpha * dL/dZ, then into [0, 1]: 0.5 - 0.25 * 4 = -0.5 is projected to 0
    assert attack.descent_step(z, grad, step_size=0.25).flatten().tolist() == [0.25, 0.75, 0.0, 0.125]
    # Adam: the same steps as torch.optim.Adam, per image, also for images that joined late
    g = torch.Generator().manual_seed(0)
    start = 0.25 + 0.5 * torch.rand(2, 3, 4, 4, generator=g)
    grads = [torch.randn(2, 3, 4, 4, generator=g) for _ in range(4)]
    ours, early, late = start.clone(), attack.Adam.start(start[:1], 1e-3), None
    reference = [start[i : i + 1].clone().requires_grad_(True) for i in range(2)]
    optims = [torch.optim.Adam([p], lr=1e-3) for p in reference]
    for k, grad in enumerate(grads):
        if k == 0:
            ours[:1] = attack.descent_step(ours[:1], grad[:1], step_size=1e-3, adam=early)
        else:  # image 1 starts at the second step, then both run as one batch
            late = late or attack.Adam.joined([early, attack.Adam.start(start[1:], 1e-3)])
            ours = attack.descent_step(ours, grad, step_size=1e-3, adam=late)
        for i, (p, opt) in enumerate(zip(reference, optims)):
            if k > 0 or i == 0:
                p.grad = grad[i : i + 1].clone()
                opt.step()
    assert late is not None and late.t.tolist() == [4, 3]
    assert torch.allclose(ours, torch.cat([p.detach() for p in reference]), rtol=0, atol=1e-6)
    assert (ours - start).abs().amax() > 2e-3, "Adam moved the pixels"
    assert late.keep(torch.tensor([1])).t.tolist() == [3]


@pytest.mark.parametrize("straight_through", [False, True])
def test_observer_sees_every_iteration_and_changes_nothing(linear_model, images, straight_through):
    cfg = config_for("mnd", straight_through=straight_through, **FAST)
    records: list[attack.StepRecord] = []
    seen = generate(linear_model, images, config=cfg, observer=records.append)
    plain = generate(linear_model, images, config=cfg)
    assert torch.equal(seen.adversarial, plain.adversarial) and torch.equal(seen.iterations, plain.iterations)
    assert torch.equal(seen.success, plain.success) and seen.success.all()
    running = set(range(len(images)))
    for t, record in enumerate(records):  # one record per iteration, from Z = X on; finished images leave
        assert set(record.rows.tolist()) <= running and (record.iterations == t).all()
        assert torch.equal(record.image, quantize(record.iterate))
        with torch.no_grad():
            assert torch.equal(record.logits.argmax(1), linear_model(record.image).argmax(1))
        assert torch.equal(record.adversarial, record.logits.argmax(1) != record.goal)
        for row, done in zip(record.rows.tolist(), record.adversarial.tolist()):
            assert done == (t == int(seen.iterations[row]))
        running -= set(record.rows[record.adversarial].tolist())
    assert not running and len(records) == int(seen.iterations.max()) + 1
    assert not records[0].adversarial.any() and torch.equal(records[0].image, images)
