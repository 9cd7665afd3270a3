"""``mnd protect`` on a photo of two people: both faces are protected by one run (the slow one of the face tests)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnd import models
from mnd.cli.main import main
from mnd.data.imageio import load_rgb
from tests.test_protect_faces import DLIB_THRESHOLD, _distances, _photo, _report

pytestmark = pytest.mark.usefixtures("one_thread")


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The two photos next to each other (black below the shorter one), a third of their size."""
    height = max(left.shape[0], right.shape[0])
    pad = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in (left, right)]
    both = Image.fromarray(np.concatenate(pad, axis=1))
    return np.asarray(both.resize((both.width // 3, both.height // 3), Image.Resampling.LANCZOS))


def test_both_faces_of_a_photo_end_up_beyond_the_threshold(tmp_path, capsys):
    pair = _side_by_side(_photo("astronaut"), _photo("grace_hopper"))
    path = tmp_path / "in" / "pair.png"
    path.parent.mkdir()
    Image.fromarray(pair).save(path)
    out = tmp_path / "out"
    assert main(["protect", str(path), "--model", "dlib_resnet_v1", "--out", str(out), "--quiet"]) == 0
    (row,) = _report(out)
    assert row["success"] == "True" and row["faces"] == row["faces_protected"] == "2"
    net = models.freeze(models.load("dlib_resnet_v1"))
    distances = _distances(net, pair, load_rgb(out / "pair.png").pixels)
    assert len(distances) == 2 and min(distances) > DLIB_THRESHOLD
    assert sorted(map(float, row["distances"].split())) == pytest.approx(sorted(distances), abs=2e-3)
    assert "2/2 faces protected" in capsys.readouterr().out
