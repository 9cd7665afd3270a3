"""The teaching figure's parts on hand-made rows: the unseen-model columns, success with intervals, the figure."""

from __future__ import annotations

import pytest

from mnd.book import teaching


def _row(method, image, *, success=True, psnr=40.0, ssim=0.98, jpeg75=True, unseen="", fooled="", **extra):
    return {"dataset": "d", "setting": "non-targeted", "method": method, "image": image, "attacked": True,
            "success": success, "psnr": psnr, "ssim": ssim, "jpeg75": jpeg75, "unseen": unseen,
            "unseen_fooled": fooled, "unseen_jpeg75": extra.get("unseen_jpeg75", fooled), "eps": ""}


def test_unseen_pairs_read_the_contract_columns():
    row = _row("pgd", "a", unseen="efficientnet_lite1;efficientnet_lite2", fooled="1;0", unseen_jpeg75="0;0")
    assert teaching.unseen_pairs(row) == [("efficientnet_lite1", True), ("efficientnet_lite2", False)]
    assert teaching.unseen_pairs(row, "unseen_jpeg75") == [("efficientnet_lite1", False), ("efficientnet_lite2", False)]
    assert teaching.unseen_pairs(_row("pgd", "a")) is None
    assert teaching.unseen_pairs({"image": "a"}) is None  # a run from before the columns existed


@pytest.mark.parametrize(("models", "flags"), [("a;b", "1"), ("a", "yes")])
def test_unseen_pairs_refuse_columns_that_do_not_pair_up(models, flags):
    with pytest.raises(ValueError, match="do not pair up"):
        teaching.unseen_pairs(_row("pgd", "x", unseen=models, fooled=flags))


def test_success_rates_count_degenerate_outputs_as_failures_and_pairs_for_unseen():
    group = [
        _row("alma_ssim", "a", psnr=4.98, ssim=0.003, unseen="m1;m2", fooled="1;1"),  # destroyed: a failure
        _row("alma_ssim", "b", unseen="m1;m2", fooled="1;0"),
        _row("alma_ssim", "c", jpeg75=False, unseen="m1;m2", fooled="0;0"),
        _row("alma_ssim", "d", success=False, jpeg75=False, unseen="m1;m2", fooled="1;1"),
    ]
    rates = teaching.success_rates(group)
    assert (rates["white_box"].successes, rates["white_box"].n) == (2, 4)
    assert (rates["jpeg75"].successes, rates["jpeg75"].n) == (1, 4)
    assert (rates["unseen"].successes, rates["unseen"].n) == (1, 8)  # only b's m1 counts
    low, high = rates["white_box"].interval
    assert low < 0.5 < high
    assert teaching.success_rates([_row("pgd", "a")])["unseen"] is None


def _rows(unseen: bool):
    rows = []
    for image in ("a", "b", "c"):
        for eps, psnr in ((1, 49.7), (2, 45.0), (4, 39.5), (8, 33.8), (16, 28.1)):
            name = "pgd" if eps == 8 else f"pgd@eps={eps}"
            rows.append(_row(name, image, success=eps >= 2, psnr=psnr, ssim=1 - eps / 50,
                             unseen="m1" if unseen else "", fooled=("1" if eps >= 8 else "0") if unseen else ""))
        for margin, psnr in ((0, 60.0), (1, 57.0)):
            rows.append(_row("mnd" if margin == 0 else f"mnd@margin={margin}", image, psnr=psnr, ssim=0.999,
                             unseen="m1" if unseen else "", fooled="0" if unseen else ""))
        rows.append(_row("ddn", image, psnr=55.0, ssim=0.998))
    return rows


@pytest.mark.parametrize("unseen", [True, False])
def test_teaching_figure_draws_three_panels_and_says_when_no_unseen_model_was_checked(unseen):
    import matplotlib

    matplotlib.use("Agg")
    fig = teaching.teaching_figure(_rows(unseen), "d", "non-targeted")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(fig.axes) == 6
    assert (teaching.NO_UNSEEN.replace(" in ", "\nin ") in texts) is not unseen
    assert "n = 3 images (a, b, c)" in fig._suptitle.get_text()
    lines = fig.axes[0].get_lines()
    assert any(list(line.get_xdata()) == pytest.approx([49.7, 45.0, 39.5, 33.8, 28.1]) for line in lines)  # PGD, budgets in order
    assert all(t.get_fontsize() >= 10 for ax in fig.axes for t in [ax.title, ax.xaxis.label])
    assert fig.get_size_inches()[0] <= teaching.WIDTH
    assert teaching.teaching_figure(_rows(False), "other", "non-targeted") is None


def test_strip_methods_list_the_budgets_then_the_margins():
    assert teaching.strip_methods() == ["pgd@eps=1", "pgd@eps=2", "pgd@eps=4", "pgd", "pgd@eps=16",
                                        "mnd", "mnd@margin=1", "mnd@margin=2", "mnd@margin=4", "mnd@margin=8"]
