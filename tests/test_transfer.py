"""Transfer: ensembles as one surrogate, the boosters, and unseen-model checks (models that only read the file)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnd import data, models
from mnd.data.imageio import load_rgb, to_tensor
from mnd.cli import attack as cli_attack
from mnd.cli.main import main
from mnd.core import boosters
from mnd.core.attack import generate, is_adversarial
from mnd.core.config import AttackConfig, validate_hparams, load_hparams
from mnd.errors import InputError
from mnd.protect import unseen
from tests.conftest import Linear
from tests.test_grid import TinyCNN


def _linear(seed: int, d: int = 3 * 16 * 16, classes: int = 3) -> Linear:
    g = torch.Generator().manual_seed(seed)
    return Linear(torch.randn(classes, d, generator=g), torch.zeros(classes)).eval()


# --- ensembles --------------------------------------------------------------------------------------------------


def test_an_ensembles_gradient_is_the_mean_of_its_members(images: torch.Tensor) -> None:
    a, b = _linear(0), _linear(1)
    ens = models.Ensemble([a, b])
    x = images[:2].clone().requires_grad_(True)
    (g_ens,) = torch.autograd.grad(ens(x)[:, 1].sum(), x)
    (g_a,) = torch.autograd.grad(a(x)[:, 1].sum(), x)
    (g_b,) = torch.autograd.grad(b(x)[:, 1].sum(), x)
    assert torch.allclose(g_ens, (g_a + g_b) / 2, atol=1e-6)
    assert not torch.allclose(g_a, g_b)  # the members differ, so the mean is not either one


def test_success_needs_every_member_fooled() -> None:
    goal = torch.tensor([0, 0])
    # image 0: both members leave class 0; image 1: only the first does
    members = torch.tensor([[[0.0, 1.0], [0.0, 2.0]], [[0.0, 1.0], [3.0, 0.0]]])
    assert is_adversarial(members, goal, targeted=False).tolist() == [True, False]
    assert is_adversarial(members, goal, targeted=False, margin=1.5).tolist() == [False, False]
    # the mean alone would call image 1 adversarial ((0+3)/2 = 1.5 against (1+0)/2 = 0.5 -> no; make it yes)
    members2 = torch.tensor([[[0.0, 5.0], [1.0, 0.0]]])
    assert is_adversarial(members2.mean(1), goal[:1], targeted=False).item()
    assert not is_adversarial(members2, goal[:1], targeted=False).item()


def test_mnd_on_an_ensemble_fools_every_member(images: torch.Tensor, one_thread: None) -> None:
    a, b = _linear(0), _linear(1)
    ens = models.freeze(models.Ensemble([a, b]))
    cfg = AttackConfig(max_iter=400, step_size=1e-2, betas=(1.0, 1.0, 1.0))
    result = generate(ens, images, config=cfg)
    assert bool(result.success.any())
    for i in result.success.nonzero().flatten().tolist():
        out = result.adversarial[i : i + 1]
        for member in (a, b):
            assert int(member(out).argmax(1)) != int(result.true_label[i])


def test_an_ensemble_spec_is_refused_when_members_cannot_share_an_input() -> None:
    with pytest.raises(InputError, match="twice"):
        models.spec("efficientnet_lite0+efficientnet_lite0")
    with pytest.raises(InputError, match="cannot be an ensemble member"):
        models.spec("efficientnet_lite0+dlib_resnet_v1")
    with pytest.raises(InputError, match="unknown model"):
        models.spec("efficientnet_lite0+nope")
    s = models.spec("efficientnet_lite0+vgg19")
    assert (s.task, s.input_size, s.offline) == ("imagenet", 224, False)


# --- boosters ---------------------------------------------------------------------------------------------------


def test_input_diversity_shrinks_and_pads_or_leaves_alone() -> None:
    x = torch.rand(2, 3, 40, 40)
    g = torch.Generator().manual_seed(0)
    assert boosters.diverse_input(x, 0.0, g) is x
    seen = [boosters.diverse_input(x, 1.0, g) for _ in range(20)]
    assert all(s.shape == x.shape for s in seen)
    assert sum(int((s == 0).flatten(1).all(0).any()) for s in seen) >= 10  # most draws pad a border with zeros
    assert all(bool((s.abs().sum() > 0)) for s in seen)


def test_translation_invariance_smooths_only_the_gradient() -> None:
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    y = boosters.translation_invariant(x, 5)
    assert torch.equal(y, x)
    w = torch.zeros(1, 3, 16, 16)
    w[0, 0, 8, 8] = 1.0
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    assert torch.allclose(grad, boosters.smooth(w, 5))
    assert float(grad[0, 0, 8, 8]) < 1.0 and float(grad[0, 0, 8, 10]) > 0  # the point spread out
    assert float(grad.sum()) == pytest.approx(1.0, abs=1e-5)  # far from the border nothing is lost


@pytest.mark.parametrize("booster", [{"diversity": 0.5}, {"translation": 3}])
def test_each_booster_changes_mnd_and_is_reproducible(images: torch.Tensor, linear_model: Linear, one_thread: None,
                                                      booster: dict) -> None:
    model = models.freeze(linear_model)
    plain = AttackConfig(max_iter=60, step_size=1e-2, betas=(1.0, 1.0, 1.0), margin=50.0)
    boosted = plain.replace(**booster)
    a = generate(model, images, config=boosted).adversarial
    b = generate(model, images, config=boosted).adversarial
    c = generate(model, images, config=plain).adversarial
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_boosters_are_checked() -> None:
    with pytest.raises(ValueError, match="straight_through"):
        AttackConfig(diversity=0.5, straight_through=True)
    with pytest.raises(ValueError, match="diversity"):
        AttackConfig(diversity=1.5)
    with pytest.raises(ValueError, match="translation"):
        AttackConfig(translation=4)
    data = load_hparams()
    data["defaults"]["translation"] = 2
    with pytest.raises(InputError, match="translation = 2"):
        validate_hparams(data, "h.toml")


# --- unseen-model checks ----------------------------------------------------------------------------------------

class _Reader(TinyCNN):
    """A checked model: records every input, and fails if it is ever differentiated."""

    seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled() and not x.requires_grad, "a checked model was differentiated"
        _Reader.seen.append(x.detach().clone())
        return super().forward(x)


def _spec(name: str, builder) -> models.ModelSpec:
    return models.ModelSpec(name=name, task="imagenet", input_size=32, resize=36, offline=True, embedding=False,
                            builder=builder, weights_hint="test")


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.REGISTRY, "t_attacked", _spec("t_attacked", lambda: TinyCNN(0)))
    monkeypatch.setitem(models.REGISTRY, "t_other", _spec("t_other", lambda: TinyCNN(1)))
    monkeypatch.setitem(models.REGISTRY, "t_reader", _spec("t_reader", _Reader))
    monkeypatch.setitem(models.REGISTRY, "t_big", models.ModelSpec(
        name="t_big", task="imagenet", input_size=64, resize=72, offline=True, embedding=False,
        builder=lambda: TinyCNN(2), weights_hint="test"))
    _Reader.seen = []


def _photos(folder: Path, n: int = 2) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((48, 40), Image.BILINEAR).save(folder / f"p{i}.png")
    return folder


def test_check_names_refuses_what_is_not_unseen(tiny_models: None) -> None:
    attacked = models.spec("t_attacked")
    with pytest.raises(InputError, match="attacked model"):
        unseen.check_names(["t_attacked"], "t_attacked")
    with pytest.raises(InputError, match="member of its ensemble"):
        unseen.check_names(["t_other"], "t_attacked+t_other")
    with pytest.raises(InputError, match="twice"):
        unseen.check_names(["t_other", "t_other"], "t_attacked")
    with pytest.raises(InputError, match="embeddings"):
        unseen.check_names(["dlib_resnet_v1"], "t_attacked")
    with pytest.raises(InputError, match="64 px"):
        unseen.check_names(["t_big"], "t_attacked", same_input_as=attacked)
    assert unseen.check_names(["t_other", "t_reader"], "t_attacked", same_input_as=attacked) == ["t_other", "t_reader"]


def test_attack_check_columns_come_from_the_re_read_file(tiny_models: None, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    photos = _photos(tmp_path / "in")
    real_png = cli_attack.png_bytes

    def altered_png(image: torch.Tensor) -> bytes:  # the file differs from the tensor in one pixel
        image = image.clone()
        image[:, 0, 0] = 1.0 - image[:, 0, 0]
        return real_png(image)

    monkeypatch.setattr(cli_attack, "png_bytes", altered_png)
    out = tmp_path / "out"
    code = main(["attack", str(photos), "--model", "t_attacked", "--method", "bim", "--check", "t_reader",
                 "--check", "t_other", "--out", str(out), "--quiet"])
    assert code in (0, 1)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["unseen"] for r in rows] == ["t_reader;t_other"] * 2
    for r in rows:
        assert set(r["unseen_fooled"].split(";")) <= {"0", "1"} and len(r["unseen_jpeg75"].split(";")) == 2
    files = {np.asarray(Image.open(out / f"p{i}.png")).tobytes() for i in range(2)}
    seen = {(s[k].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy().tobytes()
            for s in _Reader.seen for k in range(s.shape[0])}
    assert files <= seen  # the checked model read exactly the files on disk (altered pixel included)
    # and each verdict is the checked model's own labels: on the file (and its JPEG 75) against the original's
    spec = models.spec("t_reader")
    checked = unseen.Checked("t_reader", models.freeze(_Reader()))
    for i, r in enumerate(rows):
        clean = data.prepare_image(load_rgb(photos / f"p{i}.png"), spec)[None]
        saved = to_tensor(np.asarray(Image.open(out / f"p{i}.png")).copy())[None]
        plain, jpeg = unseen.fooled(checked, clean, saved)
        assert unseen.unseen_of(r)["t_reader"] == (bool(plain), bool(jpeg))


def test_attack_check_refusals_are_one_line(tiny_models: None, tmp_path: Path, capsys) -> None:
    photos = _photos(tmp_path / "in", 1)
    assert main(["attack", str(photos), "--model", "t_attacked", "--method", "bim", "--check", "t_attacked",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--check" in err[0] and "attacked model" in err[0]
    assert not (tmp_path / "o").exists()
    assert main(["attack", str(photos), "--model", "t_attacked", "--method", "bim", "--diversity", "0.5",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--diversity" in capsys.readouterr().err


def test_unseen_summary_says_what_it_does_not_promise() -> None:
    rows = [{"unseen": "m", "unseen_fooled": "1", "unseen_jpeg75": "0"},
            {"unseen": "m", "unseen_fooled": "0", "unseen_jpeg75": "0"}]
    lines = unseen.unseen_summary(rows)
    assert lines[0] == "m (not attacked): fooled on 1/2 saved files, 0/2 after JPEG 75"
    assert lines[-1] == unseen.CAVEAT
    assert unseen.unseen_summary([{"unseen": ""}]) == []


def test_a_presets_unseen_models_fill_the_grids_columns(tiny_models: None, tmp_path: Path, one_thread: None) -> None:
    import textwrap

    from mnd import experiments

    path = tmp_path / "mini.toml"
    path.write_text(textwrap.dedent("""
        name = "mini"
        description = "test"
        batch_size = 2
        max_iter = 20
        settings = ["non-targeted"]
        methods = ["bim"]
        [datasets.photos]
        source = "embedded"
        images = ["chelsea", "coffee"]
        model = "t_attacked"
        unseen = ["t_other", "t_reader"]
        """))
    preset = experiments.load_preset(str(path))
    assert preset.dataset("photos").unseen == ("t_other", "t_reader")
    experiments.run_grid(preset, tmp_path / "res", progress=False)
    rows = experiments.read_results(tmp_path / "res")
    assert len(rows) == 2 and all(unseen.unseen_of(r).keys() == {"t_other", "t_reader"} for r in rows)
    bad = path.read_text().replace('unseen = ["t_other", "t_reader"]', 'unseen = ["t_attacked"]')
    path.write_text(bad)
    with pytest.raises(InputError, match="datasets.photos.unseen"):
        experiments.load_preset(str(path))


# --- mnd protect ------------------------------------------------------------------------------------------------


def test_protect_check_reads_each_saved_file_through_its_own_preprocessing(tiny_models: None, tmp_path: Path,
                                                                           one_thread: None, capsys) -> None:
    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["protect", str(photos), "--model", "t_attacked", "--check", "t_reader", "--max-iter", "200",
                 "--out", str(out), "--quiet"])
    assert code in (0, 1)
    text = capsys.readouterr().out
    assert "t_reader (not attacked): fooled on" in text and unseen.CAVEAT in text
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["unseen"] for r in rows] == ["t_reader", "t_reader"]
    checked = unseen.Checked("t_reader", models.freeze(_Reader()), view=None)
    from mnd.protect.photo import checked_views

    (view,) = checked_views([checked])
    for r in rows:
        clean = to_tensor(load_rgb(photos / r["image"]).pixels)[None]
        saved = to_tensor(load_rgb(out / r["file"]).pixels)[None]
        plain, jpeg = unseen.fooled(view, clean, saved)
        assert unseen.unseen_of(r)["t_reader"] == (bool(plain), bool(jpeg))
        assert _Reader.seen[-1].shape[-1] == 32  # it read its own 32 px view of the full photo


def test_protect_without_check_says_other_models_may_still_read(tiny_models: None, tmp_path: Path,
                                                                 one_thread: None, capsys) -> None:
    photos = _photos(tmp_path / "in", 1)
    main(["protect", str(photos), "--model", "t_attacked", "--max-iter", "50", "--out", str(tmp_path / "o"),
          "--quiet"])
    assert "no other model was checked" in capsys.readouterr().out
    assert main(["protect", str(photos), "--model", "t_attacked", "--check", "t_attacked", "--out",
                 str(tmp_path / "o2"), "--quiet"]) == 2


def test_the_max_level_names_an_ensemble_and_the_boosters() -> None:
    from mnd.protect.photo import load_strengths

    level = load_strengths()["max"]
    assert models.members(level.model) == ["efficientnet_lite0", "efficientnet_lite1"]
    assert level.diversity > 0 and level.translation > 0 and level.margin > 0
    assert [s.name for s in level.survive] == ["jpeg:75"]


def test_a_level_with_a_bad_booster_is_refused(tmp_path: Path) -> None:
    from mnd.protect.photo import load_strengths

    path = tmp_path / "levels.toml"
    path.write_text('[x]\nmax_iter = 10\ntranslation = 4\n')
    with pytest.raises(InputError, match=r"\[x\] translation = 4"):
        load_strengths(path)
    path.write_text('[x]\nmax_iter = 10\nmodel = "efficientnet_lite0+nope"\n')
    with pytest.raises(InputError, match="unknown model 'nope'"):
        load_strengths(path)


def test_face_protection_can_be_checked_on_inception_resnet_with_stand_in_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    """``--check inception_resnet_v1_vggface2`` for users who can download its weights: here random weights of the
    right shapes stand in (no download), so only the plumbing is tested, not what the real model reads."""
    pytest.importorskip("facenet_pytorch")
    import skimage.data
    from facenet_pytorch import InceptionResnetV1

    from mnd.models import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    stand_in = InceptionResnetV1(classify=True, num_classes=8631).state_dict()
    for path in weights.vggface2_checkpoint_paths():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(stand_in, path)
    assert models.available("inception_resnet_v1_vggface2")
    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(photos / "astronaut.png")
    out = tmp_path / "out"
    code = main(["protect", str(photos), "--model", "dlib_resnet_v1", "--check", "inception_resnet_v1_vggface2",
                 "--max-iter", "30", "--out", str(out), "--quiet"])
    assert code in (0, 1)
    (row,) = list(csv.DictReader((out / "report.csv").open()))
    assert row["unseen"] == "inception_resnet_v1_vggface2"
    assert row["unseen_fooled"] in ("0", "1") and row["unseen_jpeg75"] in ("0", "1")
    assert main(["protect", str(photos), "--model", "dlib_resnet_v1", "--check", "efficientnet_lite1",
                 "--out", str(tmp_path / "o2"), "--quiet"]) == 2  # an ImageNet classifier cannot check faces
