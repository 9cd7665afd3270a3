"""The book's transfer tables and the verdict page's claim "MND images fool a model they were not made on"."""

from __future__ import annotations

from mnd import experiments
from mnd.book import transfer
from mnd.book.claims import claim_transfer


def _row(image: str, method: str, fooled: str, jpeg: str, success: bool = True) -> dict:
    return {"dataset": "imagenet", "setting": "non-targeted", "image": image, "method": method, "attacked": True,
            "success": success, "psnr": 50.0, "ssim": 0.99, "unseen": "lite1;lite2", "unseen_fooled": fooled,
            "unseen_jpeg75": jpeg}


def _preset() -> experiments.Preset:
    spec = experiments.DatasetSpec(name="imagenet", title="t", source="embedded", model="efficientnet_lite0",
                                   task="imagenet")
    return experiments.Preset("p", "", "p.toml", (spec,), ("mnd",), settings=("non-targeted",))


def test_mnd_against_the_noise_control_per_image() -> None:
    images = [f"i{k}" for k in range(8)]
    rows = [_row(i, "mnd", "1;0", "0;0") for i in images] + [_row(i, transfer.CONTROL, "0;0", "0;0") for i in images]
    claim = claim_transfer(_preset(), rows)
    by_model = {r["unseen model"]: r for r in claim.rows}
    assert by_model["lite1"]["holds"] == "holds" and by_model["lite1"]["MND: images it fools"].startswith("8/8")
    assert by_model["lite2"]["holds"] == "inconclusive"  # 0 against 0: all ties
    assert claim.verdict == "supported (1 of 2 inconclusive)"


def test_few_images_are_inconclusive_and_failures_do_not_count() -> None:
    rows = [_row(f"i{k}", "mnd", "1;1", "1;1") for k in range(3)] + [_row("i3", "mnd", "1;1", "1;1", success=False)]
    rows += [_row(f"i{k}", transfer.CONTROL, "0;0", "0;0") for k in range(4)]
    claim = claim_transfer(_preset(), rows)
    assert {r["holds"] for r in claim.rows} == {"inconclusive"}  # 3 wins of 4 pairs: below the minimum
    assert claim.rows[0]["MND: images it fools"].startswith("3/4")  # the failed image counts as not fooling
    table = transfer.transfer_rows(rows, "imagenet", "non-targeted")
    assert [r["method"] for r in table][0].startswith("MND") and table[0]["lite2 JPEG 75"].startswith("3/4")


def test_a_run_without_unseen_columns_has_no_transfer_claim_rows() -> None:
    rows = [{**_row("i0", "mnd", "", ""), "unseen": ""}]
    assert claim_transfer(_preset(), rows).rows == [] and transfer.transfer_rows(rows, "imagenet", "non-targeted") == []
