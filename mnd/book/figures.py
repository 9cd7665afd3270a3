"""Figures for the book: image grids with an enlarged detail, difference maps, loss maps, traces, Grad-CAM."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
from mnd.experiments.methods import ANCHORS
from mnd.experiments.stats import truthy


DPI = 110
"""Resolution of the book's figures (dots per inch)."""

COLUMN_PX = 688
"""Width of the book's article column in a 1280 px window (CSS px): a wider figure is shrunk to it."""

WIDTH = 7.0
"""Figure width (in) of the book's figures: 770 px at :data:`DPI`, shown at 688 px, so 10 pt text stays 10 pt."""

FONT = 11
"""Font size (pt) of titles; labels use 10."""

SMALLEST_TEXT = "Smallest text"
"""PNG text key of :func:`save_figure`: the smallest text of the figure, in pt as the book shows it."""


def smallest_text_pt(fig: Any) -> float:
    """The smallest visible text of ``fig`` in CSS points as the book shows it (inf without text).

    A figure is shown at its own size (1 px a CSS px at :data:`DPI`) or, when
    wider than the column, shrunk to :data:`COLUMN_PX`; a font of f pt then
    shows as f x DPI / 96 x the shrink factor.
    """
    from matplotlib.text import Text  # heavy: only figures need it

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    if not sizes:
        return math.inf
    shrink = min(1.0, COLUMN_PX / (fig.get_figwidth() * DPI))
    return min(sizes) * DPI / 96 * shrink


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


def image_grid(panels: Sequence[tuple[str, np.ndarray]], *, columns: int, cmap: str | None = None,
               colourbar: tuple[str, float, float, str] | None = None, title: str | None = None) -> Any:
    """A matplotlib figure of titled images, ``columns`` per row, :data:`WIDTH` wide, under ``title``.

    ``colourbar``: (colour map, value at its bottom, at its top, label with the
    unit), drawn once under the grid for maps that share one scale.
    """
    import matplotlib.pyplot as plt  # heavy: only figures need it

    rows = max(1, math.ceil(len(panels) / columns))
    size = WIDTH / columns  # each row: a square image and its title's line (0.6 in)
    extra = 0.9 if colourbar else 0.0
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, (size + 0.6) * rows + extra), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (heading, img) in zip(axes.flat, panels):
        ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=255 if cmap and img.dtype == np.uint8 else None,
                  interpolation="nearest")
        ax.set_title(heading, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=FONT)
    if colourbar:
        fig.tight_layout(rect=(0, extra / fig.get_figheight(), 1, 1))
        _colourbar(fig, *colourbar)
    else:
        fig.tight_layout()
    return fig


def _colourbar(fig: Any, cmap: str, low: float, high: float, text: str) -> None:
    """A horizontal colour bar across the bottom of ``fig``, labelled ``text`` (the quantity and its unit)."""
    from matplotlib import cm, colors  # heavy: only figures need it

    height = fig.get_figheight()
    bar = fig.add_axes((0.12, 0.45 / height, 0.76, 0.15 / height))
    fig.colorbar(cm.ScalarMappable(colors.Normalize(low, high), cmap), cax=bar, orientation="horizontal")
    bar.tick_params(labelsize=10)
    bar.set_xlabel(text, fontsize=10)


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
    """Save a figure as PNG, atomically, with no timestamp (and no software tag) in its metadata.

    Its text chunk :data:`SMALLEST_TEXT` records :func:`smallest_text_pt` (the book's tests read it).
    """
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None,
                                                          SMALLEST_TEXT: f"{smallest_text_pt(fig):.2f}"})
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
        title = f"{dataset}, {image}, {setting}: {view}"
        bar = ("gray", 0.0, float(peak), "absolute difference (8-bit levels; white = the largest of all maps)")
    else:
        stack = list(metrics.difference_maps(torch.cat([to_tensor(img) for _, img in shown]),
                                             to_tensor(clean).expand(len(shown), -1, -1, -1)).numpy())
        title = f"{dataset}, {image}, {setting}: {view}"
        bar = ("gray", 0.0, 1.0, "absolute difference, as a fraction of each map's own largest")
    tiles = [(name if c == 0 else "", maps[c]) for c in range(3) for (name, _), maps in zip(shown, stack)]
    return image_grid(tiles, columns=len(shown), cmap="gray", colourbar=bar,
                      title=title + " (rows: red, green, blue channel)")


def loss_maps_figure(clean: np.ndarray, adversarial: np.ndarray) -> Any:
    """What each term of eq. (7) compares: X, Z, |Z - X|, the Sobel maps g(X), g(Z), their difference, local SSIM."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    x, z = to_tensor(clean), to_tensor(adversarial)
    gx, gz = losses.sobel_magnitude(x)[0].mean(0), losses.sobel_magnitude(z)[0].mean(0)
    maps = [
        ("X (clean)", clean, None, ""), ("Z (MND)", adversarial, None, ""),
        ("|Z - X|", (z - x).abs()[0].sum(0).numpy() * 255, "magma", "8-bit levels, 3 channels summed"),
        ("g(X)", gx.numpy(), "gray", "Sobel magnitude"), ("g(Z)", gz.numpy(), "gray", "Sobel magnitude"),
        ("|g(Z) - g(X)|", (gz - gx).abs().numpy(), "magma", "Sobel magnitude"),
        ("local SSIM(Z, X)", ssim_map(z, x), "gray", "SSIM (1: identical)"),
    ]
    fig, axes = plt.subplots(4, 2, figsize=(WIDTH, 11.2))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img, cmap, unit) in zip(axes.flat, maps):
        shown = ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=FONT)
        if cmap:
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=10)
            bar.set_label(unit, fontsize=10)
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

    fig, (left, right) = plt.subplots(2, 1, figsize=(WIDTH, 7.4), sharex=True)
    for variant in dict.fromkeys(r["variant"] for r in steps):
        mine = [r for r in steps if r["variant"] == variant]
        name = label(variant)
        left.plot([r["iteration"] for r in mine], [r["goal_prob"] for r in mine], label=name)
        right.plot([r["iteration"] for r in mine[1:]], [r["psnr"] for r in mine[1:]], label=name)
    left.set_ylabel("probability of the " + ("target" if setting == "targeted" else "true") + " class")
    right.set(xlabel="iteration", ylabel="PSNR of the 8-bit image (dB)")
    left.grid(True, alpha=0.3)
    right.grid(True, alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    columns = 2
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=10, frameon=False)
    fig.tight_layout(rect=(0, (0.3 * math.ceil(len(labels) / columns) + 0.2) / fig.get_figheight(), 1, 1))
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
    """The mean changed-pixel ratio of each of the paper's methods: one bar chart per data set x setting, stacked
    (None: no results). The trade-off chapter's sweeps and other attacks are in the table above it."""
    import matplotlib.pyplot as plt  # heavy: only figures need it

    paper = set(preset.methods)
    panels = [(d, st) for d in preset.names for st in preset.settings
              if [s for s in experiments.select(summary, dataset=d, setting=st) if s["method"] in paper]]
    if not panels:
        return None
    height = max(len([s for s in experiments.select(summary, dataset=d, setting=st) if s["method"] in paper])
                 for d, st in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH, (0.28 * height + 1.0) * len(panels) + 0.6), squeeze=False,
                             sharex=True)
    for ax, (d, st) in zip(axes[:, 0], panels):
        mine = [s for s in experiments.select(summary, dataset=d, setting=st) if s["method"] in paper]
        values = [s["changed_ratio_all_mean"] for s in mine]
        ax.barh([s["label"] for s in mine], values,
                color=["tab:red" if s["method"] == "mnd" else "tab:gray" for s in mine])
        for y, value in enumerate(values):
            if math.isfinite(value):
                ax.text(min(value, 1.0) + 0.01, y, f"{value:.2f}", va="center", fontsize=10)
        n = max((int(s.get("attacked") or 0) for s in mine), default=0)
        ax.set_title(f"{d}, {st} (n = {n} attacked images)", fontsize=11, loc="left")
        ax.set_xlim(0, 1.12)
        ax.tick_params(labelsize=10)
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel("changed pixels: fraction of pixel values that differ (mean over the attacked images)",
                           fontsize=10)
    fig.suptitle("Changed pixels, the paper's methods (MND in red)", fontsize=12, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # the title's line above the first panel's
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


@dataclass
class CamPanels:
    """Grad-CAM of one image: the clean copy and each method's, each for the class the model predicts for it."""

    dataset: str
    setting: str
    image: str
    titles: list[str]
    images: list[np.ndarray]
    predicted: list[int]
    classes: list[str]
    maps: np.ndarray  # (N, H, W) in [0, 1]; the clean copy first
    layer: str


def gradcam_panels(preset: experiments.Preset, results: str | Path, dataset: str, setting: str, image: str,
                   methods: Sequence[str]) -> CamPanels:
    """Fig. 3's maps: Grad-CAM of the clean image and of each method's image, each for its own predicted class.

    Loads the data set's model (:func:`mnd.experiments.grid.open_dataset`) on the
    preset's device, with the preset's threads; the layer is :func:`cam_layer`.
    """
    panels = method_images(results, dataset, setting, image, methods)
    batch = torch.cat([to_tensor(img) for _, img in panels])
    with experiments.threads(preset):
        opened = experiments.open_dataset(preset, preset.dataset(dataset))
        with torch.no_grad():
            predicted = opened.model(batch.to(preset.device)).argmax(1).tolist()
        layer = cam_layer(opened.model, batch[:1].to(preset.device))
        maps = gradcam(opened.model, batch, predicted, layer)
    return CamPanels(dataset, setting, image, [t for t, _ in panels], [img for _, img in panels], predicted,
                     list(opened.classes), maps, layer_name(opened.model, layer))


def heatmap_figure(cams: CamPanels) -> Any:
    """Fig. 3: the maps of :func:`gradcam_panels` over their images, titled with the predicted classes."""
    names = cams.classes
    shown = [(f"{title}: {names[c] if c < len(names) else c}", overlay(img, m))
             for title, img, c, m in zip(cams.titles, cams.images, cams.predicted, cams.maps)]
    return image_grid(shown, columns=3, colourbar=(
        "jet", 0.0, 1.0, "Grad-CAM relevance of the predicted class (0 to 1, each map scaled to its largest)"),
        title=f"{cams.dataset}, {cams.image}, {cams.setting}: Grad-CAM at {cams.layer}")


SLIGHT_SHIFT = 0.5
"""Correlation with the clean image's Grad-CAM map at or above which an attacked image's attention "changes
slightly" (our reading of section IV-D-1; the paper gives no number)."""


def heatmap_readout(cams: CamPanels) -> str:
    """One line: does Fig. 3's observation (attention changes slightly, differently per method) hold on ``cams``?

    Measured as the Pearson correlation of each attacked image's map with the
    clean image's map; "slightly" is a correlation of at least :data:`SLIGHT_SHIFT`.
    """
    clean = cams.maps[0].ravel()
    found = []
    for title, m in zip(cams.titles[1:], cams.maps[1:]):
        r = float(np.corrcoef(clean, m.ravel())[0, 1]) if clean.std() > 0 and m.std() > 0 else math.nan
        found.append((title, r))
    if not found:
        return "**Does it reproduce?** No attacked image of this one is on disk."
    slight = [t for t, r in found if math.isfinite(r) and r >= SLIGHT_SHIFT]
    spread = ", ".join(f"{t} {r:.2f}" for t, r in found)
    verdict = ("reproduces" if len(slight) == len(found) else
               "does not reproduce" if not slight else "reproduces for some methods only")
    return (f"**Does it reproduce?** {verdict} on this one image ({cams.image}): correlation of each map with the "
            f"clean image's: {spread}; the paper's \"changes slightly\" read as a correlation of at least "
            f"{SLIGHT_SHIFT} ({len(slight)} of {len(found)} methods). One image, one reading: an illustration, "
            "not a test.")


def difference_readout(results: str | Path, rows: Iterable[Mapping[str, Any]], dataset: str, setting: str,
                       methods: Sequence[str]) -> str:
    """One line: are MND's difference maps the darkest (Fig. 4's observation), on every image of the run?

    Darkness is the mean absolute difference from the clean copy in 8-bit
    levels, read from the saved files; counted per image over the images where
    MND and every other method of ``methods`` were saved and succeeded.
    """
    others = [m for m in methods if m != "mnd"]
    chosen = [r for r in experiments.select(list(rows), dataset=dataset, setting=setting) if r["method"] in methods]
    images = sorted({str(r["image"]) for r in chosen})
    darkest = compared = 0
    gaps: list[float] = []
    for image in images:
        mine = {r["method"]: r for r in chosen if r["image"] == image}
        if set(mine) != set(methods) or not all(truthy(mine[m].get("success")) for m in methods):
            continue
        clean = load_image(experiments.clean_path(Path(results), dataset, image)).astype(np.int32)
        level = {m: float(np.abs(load_image(experiments.png_path(Path(results), dataset, setting, m, image))
                                 .astype(np.int32) - clean).mean()) for m in methods}
        compared += 1
        darkest += all(level["mnd"] < level[m] for m in others)
        gaps.append(min(level[m] for m in others) - level["mnd"])
    if not compared:
        return f"**Does it reproduce?** No image of {dataset} ({setting}) was made adversarial by every method shown."
    verdict = "reproduces" if darkest == compared else "does not reproduce" if darkest == 0 else "partly reproduces"
    return (f"**Does it reproduce?** {verdict}: MND's maps are the darkest (smallest mean absolute difference) on "
            f"{darkest} of {compared} {dataset} images that every method shown made adversarial ({setting}); the "
            f"next darkest method's mean difference exceeds MND's by a median {float(np.median(gaps)):.2f} levels "
            f"(range {min(gaps):.2f} to {max(gaps):.2f}).")


def pixel_ratio_readout(preset: experiments.Preset, rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per data set x setting: does MND change fewer pixels than each anchor (section IV-D-2), per image?"""
    rows = list(rows)
    paper = list(preset.methods)
    anchors = [m for m in paper if m in ANCHORS]
    lines = []
    for d in preset.names:
        for st in preset.settings:
            chosen = [r for r in experiments.select(rows, dataset=d, setting=st) if r["method"] in ["mnd", *anchors]]
            fewer = compared = 0
            for image in sorted({str(r["image"]) for r in chosen}):
                mine = {r["method"]: r for r in chosen if r["image"] == image}
                if "mnd" not in mine or not all(a in mine for a in anchors):
                    continue
                ratios = {m: float(mine[m]["changed_ratio"]) for m in mine}
                if not all(math.isfinite(v) for v in ratios.values()):
                    continue
                compared += 1
                fewer += all(ratios["mnd"] < ratios[a] for a in anchors)
            if compared:
                lines.append(f"{d}, {st}: MND changes fewer pixels than every anchor on {fewer} of {compared} images")
    if not lines:
        return "**Does it reproduce?** No image has MND and every anchor."
    return ("**Does it reproduce?** The paper: MND changes fewer pixels than BIM, MIFGSM, DI²FGSM and PGD "
            "(one image). Here, per image: " + "; ".join(lines) + ".")


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted name of ``layer`` inside ``model`` (its class name when it is not found), for figure captions."""
    for name, module in model.named_modules():
        if module is layer:
            return f"{name} ({type(layer).__name__})" if name else type(layer).__name__
    return type(layer).__name__
