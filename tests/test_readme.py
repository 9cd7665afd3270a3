"""The README's Python example runs as printed: a photo file in, the protected 8-bit PNG out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from mnd.data.imageio import load_rgb, to_uint8
from mnd.data.paths import project_root

pytestmark = pytest.mark.usefixtures("one_thread")


def readme_python() -> str:
    """The code block of the README's section "From Python", exactly as printed."""
    text = (project_root() / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section From Python should hold one python block"
    return blocks[0]


def test_the_readme_is_short_and_has_both_commands() -> None:
    text = (project_root() / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "make demo" in text and "make test" in text


def test_the_readme_example_protects_a_photo_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "photo.jpg", quality=95)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python(), "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    result, model = namespace["result"], namespace["model"]
    assert bool(result.success[0]) and "fooled: True" in capsys.readouterr().out
    saved = load_rgb(tmp_path / "photo-mnd.png").pixels
    assert np.array_equal(saved, to_uint8(result.adversarial[0]))  # the file holds exactly the result
    x = torch.from_numpy(saved).permute(2, 0, 1).float().div(255)[None]
    with torch.no_grad():  # the saved file, read back, still fools the model
        assert int(model(x).argmax(1)) != int(model(namespace["x"]).argmax(1))
