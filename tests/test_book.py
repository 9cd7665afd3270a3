"""mnd.book (display helpers, claims, generated page), mnd.trace and mnd.mos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mnd import attack, book, grid, mos, trace
from mnd.errors import InputError


pytestmark = pytest.mark.usefixtures("one_thread")

# --- formatting and figures ------------------------------------------------------------------


def test_formatting() -> None:
    assert book.fmt(float("nan")) == "–" and book.fmt(float("inf")) == "∞" and book.fmt(3) == "3"
    assert book.pm(48.554, 1.936) == "48.55 ± 1.94"
    assert book.pm(0.5, float("nan"), 4) == "0.5000"
    assert book.signed(-0.123) == "-0.12" and book.signed(float("nan")) == "–"
    html = book.html_table([{"a": "<b>", "b": 0.12345}], digits={"b": 3}, caption="c & d")
    assert "&lt;b&gt;" in html and "0.123" in html and "c &amp; d" in html
    md = book.markdown_table([{"x": "a|b", "y": True}], ["x", "y"])
    assert md.splitlines()[-1] == "| a\\|b | yes |"


def test_detail_is_boxed_in_red_and_enlarged() -> None:
    clean = np.zeros((64, 64, 3), np.uint8)
    other = clean.copy()
    other[40:48, 8:16] = 200
    top, left = book.detail_region(clean, [other], 16)
    assert top <= 40 and top + 16 >= 48 and left <= 8 and left + 16 >= 16
    out = book.with_detail(other, (top, left), 16, scale=2)
    assert out.shape == other.shape and out.dtype == np.uint8
    assert tuple(out[top, left]) == (255, 0, 0)  # the box on the detail
    assert tuple(out[63, 63]) == (255, 0, 0)  # the frame of the enlargement, bottom right
    assert (other == clean).sum() > 0 and not np.array_equal(out, other)


def test_common_scale_keeps_magnitudes() -> None:
    clean = np.full((4, 4, 3), 100, np.uint8)
    small, large = clean.copy(), clean.copy()
    small[0, 0, 0], large[0, 0, 0] = 101, 108
    (a, b), peak = book.common_scale_maps([small, large], clean)
    assert peak == 8 and b[0, 0, 0] == 255 and a[0, 0, 0] == 32


def test_saved_figures_are_reproducible(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    figs = [book.image_grid([("x", np.zeros((8, 8, 3), np.uint8))], columns=1) for _ in range(2)]
    a, b = (book.save_figure(f, tmp_path / f"{k}.png") for k, f in enumerate(figs))
    assert a.read_bytes() == b.read_bytes()
    assert b"tIME" not in a.read_bytes() and b"Software" not in a.read_bytes()


def test_ssim_map_matches_the_loss() -> None:
    from mnd import losses

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 24, 24, generator=g)
    z = (x + 0.05 * torch.randn(1, 3, 24, 24, generator=g)).clamp(0, 1)
    assert float(book.ssim_map(z, x).mean()) == pytest.approx(float(losses.ssim_similarity(z, x)[0]), abs=1e-5)


def test_gradcam_gives_one_map_per_image() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    for p in net.parameters():
        p.requires_grad_(False)
    maps = book.gradcam(net.eval(), torch.rand(2, 3, 16, 16), [0, 2])
    assert maps.shape == (2, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    assert book.overlay(np.zeros((16, 16, 3), np.uint8), maps[0]).shape == (16, 16, 3)


# --- claims ----------------------------------------------------------------------------------


def _summary_rows(mnd_psnr: float) -> list[dict]:
    rows = []
    for setting, shift in (("non-targeted", 0.0), ("targeted", -2.0)):
        for method, psnr, its in (("bim", 34.0, 10), ("l1", 45.0, 20), ("l2", 44.0, 20), ("no_norm", 43.0, 20),
                                  ("l1_ssim", 46.0, 20), ("l2_ssim", 44.5, 20), ("mnd", mnd_psnr, 20)):
            for image in ("a", "b"):
                rows.append({"dataset": "imagenet", "setting": setting, "method": method, "image": image,
                             "success": True, "attacked": True, "psnr": psnr + shift, "ssim": psnr / 100,
                             "iterations": its + (30 if setting == "targeted" else 0),
                             "changed_ratio": 0.3 if method == "mnd" else 0.8, "seconds": 1.0})
    return rows


def test_claims_follow_the_numbers() -> None:
    preset = grid.load_preset("tiny")
    good = {c.title: c for c in book.claims(preset, _summary_rows(48.0))}
    assert [c.verdict for c in good.values()] == ["supported"] * 5 + ["no data"]  # no MOS ratings
    bad = {c.title: c for c in book.claims(preset, _summary_rows(40.0))}
    assert bad["MND gives the best PSNR and the best SSIM of all methods"].verdict == "not supported"
    ablation = bad["The ablation ordering: l1 beats l2 and no norm, SSIM helps, the gradient term helps"]
    assert ablation.verdict == "partly supported"  # only "MND beats l1 + SSIM" fails
    assert book.verdict([]) == "no data"


def test_reproduction_page_is_generated_and_deterministic(tmp_path: Path) -> None:
    preset = grid.load_preset("tiny")
    rows = _summary_rows(48.0)
    from mnd import experiments

    for r in rows:
        r.update(model="m", targeted=r["setting"] == "targeted", note="", seed=0, task="imagenet", max_iter=25)
    experiments.write_rows(tmp_path / grid.RESULTS_CSV, rows, grid.GRID_COLUMNS)
    page = book.reproduction_page(preset, tmp_path)
    assert page == book.reproduction_page(preset, tmp_path)
    assert page.startswith("# What reproduced and what did not")
    assert page.count("**supported**") >= 5 and "MND iteration cap: 25" in page


def test_parameters_passed_to_notebooks(tmp_path: Path) -> None:
    preset = grid.load_preset("tiny", ["max_iter=5"])
    params = book.parameters(preset, tmp_path, "01_losses")
    assert params["preset"] == "tiny" and params["overrides"] == ["max_iter=5"]
    assert params["results"] == str(tmp_path.resolve()) and params["image"] == "coffee"
    assert set(book.NOTEBOOKS) == {p.stem for p in book.notebook_dir().glob("*.ipynb")}


def test_notebooks_are_thin_and_parametrised() -> None:
    import nbformat

    for name in book.NOTEBOOKS:
        nb = nbformat.read(book.notebook_dir() / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        for line in tagged[0].source.splitlines():
            assert ":" in line.split("=")[0] and "  # " in line, f"{name}: untyped or uncommented {line!r}"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} has outputs"


# --- trace --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,targeted", [("mnd", False), ("l1_ssim", True), ("no_norm", True)])
def test_trace_stops_where_generate_stops(linear_model: nn.Module, images: torch.Tensor, variant: str,
                                          targeted: bool) -> None:
    config = attack.config_for(variant, targeted=targeted, max_iter=300, step_size=1e-3)
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


# --- MOS ------------------------------------------------------------------------------------------


def test_paper_mos_averages_recomputed() -> None:
    check = mos.check_averages(mos.paper_tables(), mos.paper_averages())
    assert len(check) == 16 and all(c["images"] == 8 for c in check)
    wrong = [(c["table"], c["versus"]) for c in check if not c["matches"]]
    assert wrong == [("III", "BIM")]  # printed 1.64, the mean of its rows is 1.5175
    bim = next(c for c in check if c["table"] == "III" and c["versus"] == "BIM")
    assert bim["recomputed"] == pytest.approx(1.5175)


def test_sheet_is_seeded_and_balanced(tmp_path: Path) -> None:
    images = {"imagenet": ["a", "b", "c"], "faces": ["d"]}
    one = mos.make_sheet(images, seed=3)
    assert one == mos.make_sheet(images, seed=3) and one != mos.make_sheet(images, seed=4)
    assert len(one) == 4 * 2 * 4 and len({p.pair_id for p in one}) == len(one)
    assert {p.image_id for p in one} == {"I1", "I2", "I3", "I4"}
    assert {p.image_id for p in one if p.dataset == "faces"} == {"I4"}
    for p in one:
        mnd_file = p.left if p.mnd_side == "left" else p.right
        assert "/mnd/" in mnd_file and f"/{p.versus}/" in (p.right if p.mnd_side == "left" else p.left)
    assert 8 <= sum(p.mnd_side == "left" for p in one) <= 24
    files = mos.write_sheet(one, tmp_path / "mos", image_root=tmp_path)
    assert mos.read_key(files["key"])[0].mnd_side == one[0].mnd_side
    assert "P001" in files["html"].read_text()
    files["ratings"].write_text("rater,pair_id,score\nr1,P001,2\n")
    mos.write_sheet(one, tmp_path / "mos", image_root=tmp_path)  # never overwrites collected ratings
    assert "r1,P001,2" in files["ratings"].read_text()


def test_ratings_to_mos_tables(tmp_path: Path) -> None:
    pairs = mos.make_sheet({"imagenet": ["a", "b"]}, settings=["targeted"], anchors=["bim", "pgd"], seed=0)
    lines = ["rater,pair_id,score"]
    for rater, base in (("r1", 1), ("r2", 3)):
        for p in pairs:
            score = base if p.mnd_side == "left" else -base  # both raters prefer MND
            lines.append(f"{rater},{p.pair_id},{score}")
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    table = mos.mos_table(mos.mnd_scores(mos.read_ratings(path, pairs), pairs))
    image_rows = [r for r in table if r["image_id"] != "Average"]
    assert len(image_rows) == 4 and all(r["mean"] == 2 and r["n"] == 2 for r in image_rows)
    assert all(r["std"] == pytest.approx(math.sqrt(2)) for r in image_rows)
    assert [r["versus"] for r in table if r["image_id"] == "Average"] == ["bim", "pgd"]
    wide = mos.wide(table)
    assert [w["Image ID"] for w in wide] == ["I1", "I2", "Average"] and wide[0]["BIM mean"] == 2

    for bad, message in (("r1,P001,4", "outside"), ("r1,P001,x", "integer"), ("r1,P999,1", "unknown pair"),
                         ("r1,P001,1\nr1,P001,2", "twice"), (",P001,1", "no rater")):
        path.write_text("rater,pair_id,score\n" + bad + "\n")
        with pytest.raises(InputError, match=message):
            mos.read_ratings(path, pairs)
