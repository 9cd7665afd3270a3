"""The one result-row schema: turning an attack's outcome into tidy rows, reading and writing them.

One row is one image x method x setting, with every metric: :data:`COLUMNS`
for ``metrics.csv`` of ``mnd attack``, :data:`GRID_COLUMNS` (the same plus
where and how the row was made) for a grid's ``results.csv``;
:func:`read_results` gives them back typed.

>>> GRID_COLUMNS[:4], GRID_COLUMNS[-4:]
(['dataset', 'setting', 'image', 'method'], ['attacked', 'seed', 'task', 'max_iter'])
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnd.core import metrics, robustness
from mnd.core.attack import AttackResult
from mnd.core.pixels import quantize
from mnd.data.imageio import atomic_open
from mnd.data.outputs import sha256_of
from mnd.errors import InputError, check_regular_file
from mnd.protect.unseen import UNSEEN_COLUMNS

COLUMNS = [
    "image",
    "method",
    "model",
    "targeted",
    "success",
    "clean_label",
    "adv_label",
    "target_label",
    "psnr",
    "ssim",
    "changed_ratio",
    "iterations",
    "seconds",
    "note",
    "margin",
    "eps",
    "ms_ssim",
    "haarpsi",
    "vif",
    "gmsd",
    "fsim",
    "ciede2000",
    "lpips",
    "dists",
    *robustness.TRANSFORMS,
    "file",
    "sha256",
    *UNSEEN_COLUMNS,
]
"""Columns of metrics.csv. The first fourteen (to ``note``) are the original interface; after them,
beyond the paper:

- ``margin``: the logit margin success required (0: the paper's argmax rule);
- ``eps``: the anchor's L-infinity budget (8/255 for the paper's anchors; the
  smallest that worked for ``bim_min`` and ``pgd_min``, NaN where none did);
  empty for the other methods;
- ``ms_ssim``, ``haarpsi``, ``vif``, ``gmsd``, ``fsim``: piq's weight-free
  quality measures on the 8-bit images (:mod:`mnd.core.metrics`); NaN for
  images below a measure's minimum size: MS-SSIM needs 161 px a side, so the
  150 px dlib chips and the 160 px FaceNet crops have no MS-SSIM;
- ``ciede2000``: mean CIEDE2000 colour difference (scikit-image);
- ``lpips``, ``dists``: piq's LPIPS and DISTS distances, which need downloaded
  VGG16 weights (:mod:`mnd.models.iqa`); empty unless the run asked for them
  (the paper preset's ``weighted_metrics``) and the weights were at hand;
- ``jpeg95``, ``jpeg85``, ``jpeg75``, ``resize50``: whether the saved image
  is still adversarial after what sharing does to it (Pillow's JPEG at that
  quality with 4:2:0 chroma, a 0.5x down-and-up resize:
  :mod:`mnd.core.robustness`); False for an image that was not a success;
  empty when the attacked model was not at hand;
- ``file``, ``sha256``: the image file the row describes (its name in the
  output folder; in a grid's ``results.csv`` its path under the results
  folder) and the SHA-256 of its bytes, so a reader can check that the file
  on disk is the one the row was computed on (:func:`describes`);
- ``unseen``, ``unseen_fooled``, ``unseen_jpeg75``: the unseen-model checks
  (:mod:`mnd.protect.unseen`): the checked models, and per model whether
  its label on the saved file (and after JPEG 75) differs from its label on
  the original; empty when no model was checked.

Files written before these columns existed read with them empty (NaN).
"""

ORIGINAL_COLUMNS = COLUMNS[: COLUMNS.index("note") + 1]
"""The columns of metrics.csv before the margin, eps and quality columns: such a file is still ours."""


@dataclass(frozen=True)
class RowContext:
    """What a row needs beyond the attack result."""

    method: str
    model: str
    targeted: bool


def result_rows(
    result: AttackResult, clean: torch.Tensor, names: Sequence[str], ctx: RowContext, notes: Sequence[str | None] = (),
    *, model: nn.Module | None = None, weighted: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    | None = None,
) -> list[dict[str, Any]]:
    """One row per image, with PSNR/SSIM/changed ratio and :data:`mnd.core.metrics.QUALITY` on the 8-bit images.

    The batch's wall time is shared among its images in proportion to their
    iterations (evenly when none took any). The note holds the conversion
    note of the photo and, for an image that is not a success, the engine's
    reason (not attacked and why, non-finite values, unchanged output).
    With the attacked ``model``, the robustness columns say whether each
    success survives JPEG 95/85/75 and a 0.5x resize. ``weighted``: metrics
    that need weights (:func:`mnd.models.iqa.load_weighted_metric`), by column name.
    """
    adv = result.adversarial
    survived: list[dict[str, bool]] = [{} for _ in names]
    if model is not None:
        kept = robustness.survival(model, adv, result.true_label, result.target_label, ctx.targeted)
        survived = robustness.survival_columns(kept, result.success)
    clean = quantize(clean.detach().cpu())
    psnr, ssim, ratio = metrics.psnr(adv, clean), metrics.ssim(adv, clean), metrics.changed_ratio(adv, clean)
    quality = {name: measure(adv, clean) for name, measure in metrics.QUALITY.items()}
    quality.update({name: measure(adv, clean) for name, measure in (weighted or {}).items()})
    eps = _per_image(result.extras.get("eps"), len(names))
    its = result.iterations.double()
    share = its / its.sum() if float(its.sum()) > 0 else torch.full_like(its, 1.0 / len(its))
    reasons = getattr(result, "reason", None) or [""] * len(names)
    rows = []
    for i, name in enumerate(names):
        note = notes[i] if i < len(notes) else None
        why = "" if bool(result.success[i]) else reasons[i]
        if not bool(result.attacked[i]):
            why = why or "already misclassified: not attacked"
        note = "; ".join(filter(None, [note, why]))
        rows.append(
            {
                "image": name,
                "method": ctx.method,
                "model": ctx.model,
                "targeted": ctx.targeted,
                "success": bool(result.success[i]),
                "clean_label": int(result.clean_label[i]),
                "adv_label": int(result.adv_label[i]),
                "target_label": "" if result.target_label is None else int(result.target_label[i]),
                "psnr": float(psnr[i]),
                "ssim": float(ssim[i]),
                "changed_ratio": float(ratio[i]),
                "iterations": int(result.iterations[i]),
                "seconds": float(result.seconds * share[i]),
                "note": note or "",
                "margin": float(getattr(result, "margin", 0.0)),
                "eps": eps[i],
                **{name: float(values[i]) for name, values in quality.items()},
                **survived[i],
            }
        )
    return rows


def _per_image(value: Any, n: int) -> list[float | None]:
    """An extra of a result as one value per image: a list as it is, one number for all, None when absent."""
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)] * n


def row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """Rows with the same key describe the same experiment (a rerun replaces them)."""
    return (str(row["image"]), str(row["method"]), str(row["model"]), str(row["targeted"]))


def read_rows(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Rows of an existing CSV file, or [] when there is none (or it is empty).

    Args:
        path: the CSV file.
        columns: when given, the header the file must have: a file written by
            someone else is refused rather than merged into (and so replaced).

    Raises:
        InputError: naming ``path``: unreadable, not UTF-8 text, malformed
            CSV, or (with ``columns``) another header.
    """
    if not path.exists():
        return []
    check_regular_file(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        header = reader.fieldnames
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problem = getattr(exc, "strerror", None) or exc
        raise InputError(path, f"cannot read the existing results ({problem})") from None
    if columns is not None and header is not None and not _ours(list(header), list(columns)):
        shown = ",".join(header)
        raise InputError(
            path,
            f"exists but is not an mnd results file (its columns are {shown[:80]!r}"
            f"{'...' if len(shown) > 80 else ''}); move it away or choose another output folder",
        )
    if header is not None:
        _check_complete(path, header, rows)
        if columns is not None and not text.endswith("\n"):  # mnd ends every file it writes with a line end
            raise InputError(path, "truncated or damaged: its last row is cut short; move it away or choose another "
                             "folder")
    return rows


ADDED: tuple[tuple[str, ...], ...] = (
    ("margin", "eps", "ms_ssim", "haarpsi", "vif", "gmsd", "fsim", "ciede2000", *robustness.TRANSFORMS),
    ("lpips", "dists"),
    ("file", "sha256"),
    UNSEEN_COLUMNS,
)
"""The columns each release of mnd added to :data:`ORIGINAL_COLUMNS`, oldest first (a new column goes into
:data:`COLUMNS` and a new entry here)."""


def known_headers(columns: Sequence[str]) -> list[list[str]]:
    """Every header mnd has written for a file of ``columns`` (:data:`COLUMNS`, :data:`GRID_COLUMNS`, a
    protect report's), oldest first: ``columns`` less the columns added after each release.

    >>> [len(h) for h in known_headers(COLUMNS)] == [14, 14 + len(ADDED[0]), 16 + len(ADDED[0]), 18 + len(ADDED[0]),
    ...                                            len(COLUMNS)]
    True
    """
    later = [set().union(*ADDED[k:]) for k in range(len(ADDED) + 1)]
    return [[c for c in columns if c not in missing] for missing in later]


def _ours(header: list[str], columns: list[str]) -> bool:
    """``header`` is one that mnd wrote for files of ``columns`` (now or in an earlier release).

    >>> _ours(COLUMNS[:14], COLUMNS), _ours(COLUMNS, COLUMNS), _ours(COLUMNS[:-1], COLUMNS)
    (True, True, False)
    """
    return header in known_headers(columns)


def _check_complete(path: Path, header: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Every row has exactly the header's fields: a truncated or damaged file is refused, never half-read."""
    for number, row in enumerate(rows, start=1):
        if None in row or any(value is None for value in row.values()):
            fields = "more" if None in row else sum(v is not None for v in row.values())
            raise InputError(path, f"truncated or damaged: row {number} has {fields} fields where the header has "
                             f"{len(header)}; move it away or choose another folder")


def merge_rows(
    old: Iterable[dict[str, Any]],
    new: Iterable[dict[str, Any]],
    key: Callable[[dict[str, Any]], Hashable] = row_key,
) -> list[dict[str, Any]]:
    """``old`` with every row that ``new`` repeats (same ``key``) replaced, then the new rows."""
    new = list(new)
    replaced = {key(r) for r in new}
    return [r for r in old if key(r) not in replaced] + new


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return value


def write_rows(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> None:
    """Write rows as CSV, atomically (an older file survives a crash intact)."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in columns})


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table for the terminal: columns aligned, no trailing spaces.

    >>> print(format_table([{"a": 1, "b": "long value"}, {"a": 22, "b": "x"}], ["a", "b"]))
    a   b
    1   long value
    22  x
    """
    cells = [[str(_fmt(r.get(c, ""))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


# --- which row describes which file -------------------------------------------------------


METRICS_CSV = "metrics.csv"
"""The rows of ``mnd attack``'s output folder (:data:`COLUMNS`)."""

REPORT_CSV = "report.csv"
"""The rows of ``mnd protect``'s output folder (:data:`mnd.protect.photo.REPORT_COLUMNS`)."""


@dataclass(frozen=True)
class Ledger:
    """A CSV file of an output folder whose rows each describe one image file of the folder.

    ``experiment``: the columns that say how a file was made; a run never
    replaces a file that another experiment made (:func:`check_replaceable`).
    """

    csv: str
    experiment: tuple[str, ...]
    command: str

    def file_of(self, row: Mapping[str, Any]) -> str:
        """The name of the file a row describes: its ``file`` column (empty when nothing was written), or in a
        row written before that column, the name made from its image."""
        if "file" in row:
            return str(row["file"] or "")
        image = str(row.get("image", ""))
        if self.csv == REPORT_CSV:  # the photo's stem and the format's suffix (mnd.protect.photo.SUFFIX)
            return Path(image).stem + (".jpg" if str(row.get("format", "")).startswith("jpeg") else ".png")
        return f"{image}.png"

    def describe(self, row: Mapping[str, Any]) -> str:
        """How the file of ``row`` was made, in words: ``mnd attack --method bim --model m --targeted``."""
        words = [self.command]
        for column in self.experiment:
            value = str(row.get(column, ""))
            if column == "targeted":
                words += ["--targeted"] if value == "True" else []
            elif value:
                words += [f"--{column}", value]
        return " ".join(words)


METRICS = Ledger(METRICS_CSV, ("method", "model", "targeted"), "mnd attack")
REPORT = Ledger(REPORT_CSV, ("model", "targeted", "criterion"), "mnd protect")
LEDGERS = (METRICS, REPORT)


def _ledger_rows(folder: Path, ledger: Ledger, columns: Sequence[str] | None) -> list[dict[str, str]]:
    """The rows of ``folder``'s ledger file; a file of that name that mnd did not write counts as none here (the
    command that owns it refuses it)."""
    try:
        return read_rows(folder / ledger.csv, columns)
    except InputError:
        return []


def check_replaceable(folder: Path, names: Sequence[str], ledger: Ledger, experiment: Mapping[str, Any],
                      columns: Mapping[str, Sequence[str]] | None = None) -> None:
    """Refuse, before any work, a run that would replace a file another experiment made.

    One output folder holds one row per file: a rerun of the same experiment
    (the ``experiment`` columns of ``ledger``) replaces its own files and
    rows; a file that a row of another experiment, or of the other command,
    describes is never replaced (its row would describe a file no longer
    there).

    Args:
        folder: the output folder.
        names: the files this run writes.
        ledger: this run's ledger (:data:`METRICS` or :data:`REPORT`).
        experiment: this run's values of ``ledger.experiment``.
        columns: each ledger file's expected header, by file name (others are read unchecked).

    Raises:
        InputError: naming the file, the experiment that made it and what to do.
    """
    wanted = set(names)
    mine = {c: str(experiment.get(c, "")) for c in ledger.experiment}
    for other in LEDGERS:
        for row in _ledger_rows(folder, other, (columns or {}).get(other.csv)):
            name = other.file_of(row)
            if name not in wanted:
                continue
            if other is ledger and all(str(row.get(c, "")) == v for c, v in mine.items()):
                continue
            raise InputError(
                folder / name,
                f"holds the output of '{other.describe(row)}' (its row is in {other.csv}); this run "
                f"('{ledger.describe(mine)}') would replace it: give each method and setting its own --out",
            )


def describes(row: Mapping[str, Any], folder: str | Path, ledger: Ledger = METRICS) -> bool:
    """Whether the file ``row`` names is in ``folder`` with the content the row records (its SHA-256)."""
    path = Path(folder) / ledger.file_of(row)
    return bool(row.get("sha256")) and path.is_file() and sha256_of(path) == row["sha256"]


def without_files(rows: Iterable[dict[str, Any]], names: Iterable[str], ledger: Ledger = METRICS
                  ) -> list[dict[str, Any]]:
    """``rows`` less every row that describes one of the files ``names``."""
    names = set(names)
    return [r for r in rows if ledger.file_of(r) not in names]


RESULTS_CSV = "results.csv"


GRID_COLUMNS: list[str] = ["dataset", "setting", *COLUMNS, "attacked", "seed", "task", "max_iter"]
"""Columns of results.csv: :data:`COLUMNS` plus where and how each row was made."""


_BOOL = {"True": True, "False": False, "true": True, "false": False}


_INT = ("clean_label", "adv_label", "target_label", "iterations", "seed", "max_iter")


_FLOAT = ("psnr", "ssim", "changed_ratio", "seconds", "margin", "eps", *metrics.QUALITY, "lpips", "dists")


def _typed(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for k in ("targeted", "success", "attacked"):
        if k in out:
            out[k] = _BOOL.get(str(out[k]), bool(out[k]))
    for k in robustness.TRANSFORMS:  # empty (not measured, or a file from before the column): None
        if k in out:
            out[k] = _BOOL.get(str(out[k]).strip())
    for k in _INT:
        if k in out:
            out[k] = int(out[k]) if str(out[k]).strip() not in ("", "None") else None
    for k in _FLOAT:
        if k in out:
            out[k] = float(out[k]) if str(out[k]).strip() != "" else math.nan
    return out


def read_results(results: str | Path) -> list[dict[str, Any]]:
    """The rows of ``results.csv``, with booleans, integers and floats typed ([] when absent).

    A file written before a column existed reads with it empty (NaN for the numbers).
    """
    added = dict.fromkeys(COLUMNS[len(ORIGINAL_COLUMNS):], "")
    return [_typed({**added, **r}) for r in read_rows(Path(results) / RESULTS_CSV)]


def select(rows: Iterable[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    """The rows whose fields equal every ``key=value`` given.

    >>> select([{"a": 1, "b": 2}, {"a": 2, "b": 2}], a=1)
    [{'a': 1, 'b': 2}]
    """
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]
