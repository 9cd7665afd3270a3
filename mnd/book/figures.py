"""Figures for the book: image grids with an enlarged detail, difference maps, loss maps, traces, Grad-CAM."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mnd import experiments
from mnd.book.pages import label
from mnd.book.tables import html_table
from mnd.core import losses, metrics
from mnd.data.imageio import atomic_open, load_rgb
from mnd.data.imageio import to_tensor as image_tensor
from mnd.errors import InputError
from mnd.experiments import trace


def load_image(path: str | Path) -> np.ndarray:
    """An 8-bit RGB PNG as an (H, W, 3) uint8 array."""
    return load_rgb(path).pixels


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return image_tensor(image)[None]


def detail_region(clean: np.ndarray, others: Sequence[np.ndarray], size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window where the images differ most from ``clean``.

    The window (on a grid of ``size // 2`` steps) maximises the summed
    absolute difference over all ``others``, so the enlarged detail shows
    the perturbations rather than a flat patch.
    """
    h, w = clean.shape[:2]
    size = min(size, h, w)
    total = np.zeros((h, w))
    for img in others:
        total += np.abs(img.astype(np.int32) - clean.astype(np.int32)).sum(axis=2)
    step = max(1, size // 2)
    best, where = -1.0, (0, 0)
    for top in range(0, h - size + 1, step):
        for left in range(0, w - size + 1, step):
            value = float(total[top : top + size, left : left + size].sum())
            if value > best:
                best, where = value, (top, left)
    return where


def _rectangle(img: np.ndarray, top: int, left: int, height: int, width: int, color: tuple[int, int, int],
               thickness: int) -> None:
    c = np.array(color, dtype=np.uint8)
    img[top : top + thickness, left : left + width] = c
    img[top + height - thickness : top + height, left : left + width] = c
    img[top : top + height, left : left + thickness] = c
    img[top : top + height, left + width - thickness : left + width] = c


def with_detail(image: np.ndarray, region: tuple[int, int], size: int, *, scale: int = 2,
                color: tuple[int, int, int] = (255, 0, 0), thickness: int = 2) -> np.ndarray:
    """The paper's Figs. 1 and 2 style: a red box on ``region`` and its enlargement in the bottom-right corner.

    The ``size`` x ``size`` window at ``region`` (top, left) is enlarged
    ``scale`` times with nearest-neighbour sampling (every pixel stays
    visible) and pasted, framed in red, over the bottom-right corner.
    """
    out = image.copy()
    top, left = region
    crop = image[top : top + size, left : left + size]
    big = np.kron(crop, np.ones((scale, scale, 1), dtype=np.uint8))
    bh, bw = big.shape[:2]
    h, w = out.shape[:2]
    bh, bw = min(bh, h), min(bw, w)
    out[h - bh :, w - bw :] = big[:bh, :bw]
    _rectangle(out, h - bh, w - bw, bh, bw, color, thickness)
    _rectangle(out, top, left, crop.shape[0], crop.shape[1], color, thickness)
    return out


def image_grid(panels: Sequence[tuple[str, np.ndarray]], *, columns: int, size: float = 2.6,
               cmap: str | None = None) -> Any:
    """A matplotlib figure of titled images, ``columns`` per row."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img) in zip(axes.flat, panels):
        ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=255 if cmap and img.dtype == np.uint8 else None,
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def method_images(results: str | Path, dataset: str, setting: str, image: str,
                  methods: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """The clean image and each method's adversarial image (those on disk), with display titles."""
    out = [("Clean", load_image(experiments.clean_path(Path(results), dataset, image)))]
    for method in methods:
        path = experiments.png_path(Path(results), dataset, setting, method, image)
        if path.exists():
            out.append((label(method), load_image(path)))
    return out


def comparison_figure(results: str | Path, dataset: str, setting: str, image: str, methods: Sequence[str], *,
                      detail: int = 48, scale: int = 2, columns: int = 3) -> Any:
    """Figs. 1 and 2: the clean image, MND and the anchors, each with an enlarged detail in a red box.

    One detail window, the same for every panel (:func:`detail_region`).
    """
    panels = method_images(results, dataset, setting, image, methods)
    clean = panels[0][1]
    region = detail_region(clean, [img for _, img in panels[1:]], detail)
    return image_grid([(t, with_detail(img, region, detail, scale=scale)) for t, img in panels], columns=columns)


def common_scale_maps(adversarial: Sequence[np.ndarray], clean: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Absolute difference maps of several images on ONE scale: the largest difference of all -> 255.

    Unlike :func:`mnd.core.metrics.difference_maps`, which stretches every map to
    its own maximum, a common scale keeps the magnitudes comparable across
    methods (the paper's "for a fair comparison ... normalized to 0~255").

    Returns:
        (the (H, W, 3) uint8 maps, the largest difference in 8-bit levels).
    """
    diffs = [np.abs(a.astype(np.int32) - clean.astype(np.int32)) for a in adversarial]
    peak = max(1, max(int(d.max()) for d in diffs))
    return [np.round(d * (255.0 / peak)).astype(np.uint8) for d in diffs], peak


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure as PNG, atomically, with no timestamp (and no software tag) in its metadata."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def show_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure (:func:`save_figure`), close it and display exactly the saved PNG."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    saved = save_figure(fig, path)
    plt.close(fig)
    try:
        from IPython.display import Image, display  # optional: present where notebooks run
    except ImportError:  # pragma: no cover
        return saved
    display(Image(data=saved.read_bytes(), format="png"))
    return saved


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI (for HTML built in a notebook)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


DifferenceView = Literal["common scale", "per map"]


DIFFERENCE_VIEWS: tuple[DifferenceView, ...] = ("common scale", "per map")
"""The two normalisations of Fig. 4's difference maps (:func:`difference_figure`)."""


def difference_figure(results: str | Path, dataset: str, setting: str, image: str, methods: Sequence[str],
                      view: DifferenceView) -> Any:
    """Fig. 4: each method's absolute difference from the clean image, per colour channel (one row per channel).

    ``view`` ``"common scale"`` puts every map on one scale
    (:func:`common_scale_maps`, the largest difference is white); ``"per map"``
    stretches each map to its own maximum (:func:`mnd.core.metrics.difference_maps`).
    """
    panels = method_images(results, dataset, setting, image, methods)
    (_, clean), shown = panels[0], panels[1:]
    if view == "common scale":
        common, peak = common_scale_maps([img for _, img in shown], clean)
        stack = [m.transpose(2, 0, 1) for m in common]
        title = f"{dataset}, {image}, {setting}: {view} (white = {peak} levels)"
    else:
        stack = list(metrics.difference_maps(torch.cat([to_tensor(img) for _, img in shown]),
                                             to_tensor(clean).expand(len(shown), -1, -1, -1)).numpy())
        title = f"{dataset}, {image}, {setting}: {view}"
    tiles = [(f"{name}, {channel}", maps[c]) for c, channel in enumerate(("red", "green", "blue"))
             for (name, _), maps in zip(shown, stack)]
    fig = image_grid(tiles, columns=len(shown), size=2.0, cmap="gray")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def loss_maps_figure(clean: np.ndarray, adversarial: np.ndarray) -> Any:
    """What each term of eq. (7) compares: X, Z, |Z - X|, the Sobel maps g(X), g(Z), their difference, local SSIM."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    x, z = to_tensor(clean), to_tensor(adversarial)
    gx, gz = losses.sobel_magnitude(x)[0].mean(0), losses.sobel_magnitude(z)[0].mean(0)
    maps = [
        ("X (clean)", clean, None), ("Z (MND)", adversarial, None),
        ("|Z - X|", (z - x).abs()[0].sum(0).numpy(), "magma"),
        ("g(X)", gx.numpy(), "gray"), ("g(Z)", gz.numpy(), "gray"),
        ("|g(Z) - g(X)|", (gz - gx).abs().numpy(), "magma"),
        ("local SSIM(Z, X)", ssim_map(z, x), "gray"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img, cmap) in zip(axes.flat, maps):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def loss_terms_html(results: str | Path, dataset: str, setting: str, image: str, methods: Sequence[str]) -> str:
    """Every term of eq. (7) between the clean image and each method's adversarial image (:func:`mnd.experiments.trace.terms`)."""
    panels = method_images(results, dataset, setting, image, methods)
    x = to_tensor(panels[0][1])
    table = []
    for title, img in panels[1:]:
        t = trace.terms(to_tensor(img), x)
        table.append({"method": title, "l1 (eq. 8)": t["l1"], "l2 (eq. 9)": t["l2"], "SSIM (eq. 10)": t["ssim"],
                      "gradient l1 (eq. 18)": t["gradient_l1"], "PSNR": t["psnr"]})
    digits = {"l1 (eq. 8)": 5, "l2 (eq. 9)": 5, "SSIM (eq. 10)": 5, "gradient l1 (eq. 18)": 5, "PSNR": 2}
    return html_table(table, digits=digits, caption=f"{image}, {setting}")


def trace_figure(steps: Sequence[Mapping[str, Any]], setting: str) -> Any:
    """The traces of :func:`mnd.experiments.trace.load_or_run`: the goal class's probability and the PSNR, step by step."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for variant in dict.fromkeys(r["variant"] for r in steps):
        mine = [r for r in steps if r["variant"] == variant]
        name = label(variant)
        left.plot([r["iteration"] for r in mine], [r["goal_prob"] for r in mine], label=name)
        right.plot([r["iteration"] for r in mine[1:]], [r["psnr"] for r in mine[1:]], label=name)
    left.set(xlabel="iteration", ylabel="probability of the " + ("target" if setting == "targeted" else "true") + " class")
    right.set(xlabel="iteration", ylabel="PSNR of the 8-bit image (dB)")
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trace_ends_html(steps: Sequence[Mapping[str, Any]]) -> str:
    """Where each trace of :func:`mnd.experiments.trace.load_or_run` ended: iterations, success and the final terms."""
    variants = list(dict.fromkeys(r["variant"] for r in steps))
    last = [[r for r in steps if r["variant"] == v][-1] for v in variants]
    return html_table(
        [{"setting": label(r["variant"]), "iterations": r["iteration"], "succeeded": r["adversarial"],
          "PSNR": r["psnr"], "SSIM": r["ssim"], "l1": r["l1"], "gradient l1": r["gradient_l1"],
          "error": r["error"]} for r in last],
        digits={"PSNR": 2, "SSIM": 5, "l1": 5, "gradient l1": 5}, caption="where each trace ended")


def pixel_ratio_figure(preset: experiments.Preset, summary: Sequence[Mapping[str, Any]]) -> Any | None:
    """One bar chart per data set x setting of the mean changed-pixel ratio of each method (None: no results)."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    panels = [(d, st) for d in preset.names for st in preset.settings if experiments.select(summary, dataset=d, setting=st)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (d, st) in zip(axes[0], panels):
        mine = experiments.select(summary, dataset=d, setting=st)
        ax.barh([s["label"] for s in mine], [s["changed_ratio_all_mean"] for s in mine],
                color=["tab:red" if s["method"] == "mnd" else "tab:gray" for s in mine])
        ax.set(title=f"{d}, {st}", xlim=(0, 1), xlabel="changed pixels (mean over all attacked images)")
        ax.invert_yaxis()
    fig.tight_layout()
    return fig


def ssim_map(z: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """The local SSIM of eq. (10) at every position (channel mean), as the attack computes it.

    The statistics of :class:`mnd.core.losses.CleanReference` (piq's 11x11
    Gaussian window, sigma 1.5, two 1-D passes), before its mean over the
    positions: that mean is the SSIM term of eq. (7).

    Args:
        z, x: (1, C, H, W) images in [0, 1].

    Returns:
        (H - 10, W - 10) float array.
    """
    return losses.CleanReference(x.float()).ssim_map(z.float()).mean(1)[0].numpy()


def cam_layer(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """Grad-CAM's target layer: the last module to produce a spatial feature map.

    With an ``example`` input, the model is run once and the last module (in
    execution order) whose output is (N, C, H, W) with H, W > 1 is taken: the
    final block or activation before global pooling (EfficientNet's ``bn2``,
    the last residual block of dlib's ResNet, VGG's last pooling). Without an
    example, the last ``nn.Conv2d``.
    """
    if example is not None:
        seen: list[nn.Module] = []

        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
                seen.append(module)

        handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
        try:
            with torch.no_grad():
                model(example)
        finally:
            for h in handles:
                h.remove()
        if seen:
            return seen[-1]
    last = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last = module
    if last is None:
        raise InputError("grad-cam", f"{type(model).__name__} has no convolution layer")
    return last


def gradcam(model: nn.Module, images: torch.Tensor, classes: Sequence[int], layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM heatmaps (pytorch-grad-cam) of ``classes`` for a batch of [0, 1] images.

    Returns:
        (N, H, W) maps in [0, 1].
    """
    from pytorch_grad_cam import GradCAM  # optional: the book extra
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = next(model.parameters()).device
    x = images.detach().float().to(device).requires_grad_(True)
    with GradCAM(model=model, target_layers=[layer or cam_layer(model, x[:1].detach())]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return np.asarray(maps)


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """A heatmap in [0, 1] over an (H, W, 3) uint8 image (pytorch-grad-cam's JET overlay)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # optional: the book extra

    return show_cam_on_image(image.astype(np.float32) / 255.0, heatmap, use_rgb=True)


def heatmap_figure(preset: experiments.Preset, results: str | Path, dataset: str, setting: str, image: str,
                   methods: Sequence[str]) -> Any:
    """Fig. 3: Grad-CAM on the clean image and each method's image, each for the class the model predicts for it.

    Loads the data set's model (:func:`mnd.experiments.grid.open_dataset`) on the
    preset's device, with the preset's threads; the panel titles name the
    predicted classes.
    """
    panels = method_images(results, dataset, setting, image, methods)
    batch = torch.cat([to_tensor(img) for _, img in panels])
    with experiments.threads(preset):
        opened = experiments.open_dataset(preset, preset.dataset(dataset))
        with torch.no_grad():
            predicted = opened.model(batch.to(preset.device)).argmax(1).tolist()
        maps = gradcam(opened.model, batch, predicted)
    names = opened.classes
    shown = [(f"{title}: {names[c] if c < len(names) else c}", overlay(img, m))
             for (title, img), c, m in zip(panels, predicted, maps)]
    return image_grid(shown, columns=3)
