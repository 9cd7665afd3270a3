"""An output file and its row change together: interrupted reruns, other methods, kept rows, stale files.

The interruption tests drive a real ``mnd`` process and send it a real
signal (SIGKILL, which nothing can catch, or SIGINT, Ctrl-C) the moment it
replaces an output file (a new inode at the file's name), then check every
row left in the folder against the file on disk: its SHA-256, and the
model's label on the file re-read from disk.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnd import models
from mnd.cli.main import main
from mnd.data import prepare_image
from mnd.data.imageio import LoadedImage, load_rgb
from mnd.data.outputs import OutputFolder, interrupts_held, remove_stale
from mnd.errors import InputError
from mnd.experiments import rows as rows_mod
from tests.conftest import MeanAbove

MAIN = "import sys; from mnd.cli.main import main; sys.exit(main(sys.argv[1:]))"
SPEC = models.spec("efficientnet_lite0")


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MND_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", MAIN, *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _signal_when_replaced(proc: subprocess.Popen[str], path: Path, sig: int, timeout: float = 240.0) -> bool:
    """Send ``sig`` the moment ``path`` gets a new inode (written or replaced); False when the run ended first."""
    before = _inode(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        now = _inode(path)
        if now is not None and now != before:
            proc.send_signal(sig)
            return True
        time.sleep(0.0005)
    proc.kill()
    raise AssertionError(f"{path} was not replaced within {timeout} s")


@torch.no_grad()
def _label(model: torch.nn.Module, path: Path) -> int:
    """The model's label on a saved file, read back as ``mnd`` reads a photo (resize, centre crop)."""
    return int(model(prepare_image(load_rgb(path), SPEC)[None]).argmax(1))


def _check_rows_describe_files(folder: Path, table: str, model: torch.nn.Module) -> list[dict[str, str]]:
    """Every row in ``folder/table`` names a file that is there, with the row's SHA-256 and the row's label."""
    ledger = rows_mod.METRICS if table == rows_mod.METRICS_CSV else rows_mod.REPORT
    found = _rows(folder / table)
    for row in found:
        path = folder / ledger.file_of(row)
        assert path.is_file(), f"{row['image']}: its row names {path.name}, which is not there"
        assert row.get("sha256") == _sha(path), f"{path.name}: the row describes another file than the one on disk"
        assert _label(model, path) == int(row["adv_label"]), f"{path.name}: the model reads another label than its row"
    return found


class Toy(torch.nn.Module):
    """1000 ImageNet-like logits: class 0 when the mean pixel is above 0.5 (logit 100 x distance), else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        two = MeanAbove(0.5)(x)
        return torch.cat([two, torch.full((x.shape[0], 998), -50.0)], dim=1)


@pytest.fixture
def toy_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """efficientnet_lite0's name and input, :class:`Toy` behind it (fast)."""
    monkeypatch.setattr(models, "load", lambda name: Toy())


@pytest.fixture
def toy_photos(tmp_path: Path) -> Path:
    """Two smooth 256x240 photos that :class:`Toy` sees a little above its threshold (class 0, attackable)."""
    folder = tmp_path / "toy-in"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for name, mean in (("chelsea", 0.5012), ("coffee", 0.5016)):
        x = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(240, 256), mode="bilinear")
        x = (x - x.mean()) * 0.5 + 0.5
        seen = prepare_image(load_rgb_pixels(x), SPEC).mean()  # the mean the model sees (resize, centre crop)
        pixels = ((x + mean - seen)[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder


def load_rgb_pixels(x: torch.Tensor) -> LoadedImage:
    return LoadedImage(Path("x.png"), (x[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())


@pytest.fixture
def two_photos(tmp_path: Path, photos: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, pixels in photos.items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder


# --- the three severe cases, driven by real signals ----------------------------------------


@pytest.mark.slow  # a real model, three mnd processes
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_attack_rerun_interrupted_as_a_file_is_replaced_leaves_no_row_beside_another_file(
        two_photos, tmp_path, effnet, sig):
    out = tmp_path / "o"
    assert main(["attack", str(two_photos), "--out", str(out), "--batch-size", "2", "--max-iter", "20",
                 "--quiet"]) in (0, 1)
    assert {r["image"] for r in _rows(out / "metrics.csv")} == {"chelsea", "coffee"}
    rerun = _start(["attack", str(two_photos), "--out", str(out), "--batch-size", "2", "--max-iter", "1",
                    "--quiet"], tmp_path)
    assert _signal_when_replaced(rerun, out / "chelsea.png", sig), "the rerun ended before replacing a file"
    status = rerun.wait(timeout=120)
    assert status == (-signal.SIGKILL if sig == signal.SIGKILL else 130), rerun.stderr.read() if rerun.stderr else ""
    model = models.freeze(effnet)
    left = _check_rows_describe_files(out, "metrics.csv", model)
    if sig == signal.SIGINT:  # Ctrl-C waits for the batch's files and rows: both new, both there
        assert {r["image"] for r in left} == {"chelsea", "coffee"}
        assert all(int(r["iterations"]) <= 1 for r in left), "the rows are the rerun's"
        assert not list(out.glob(".*.tmp"))


@pytest.mark.slow  # a real model at full resolution, two mnd processes
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_protect_rerun_interrupted_as_the_photo_is_replaced_leaves_no_row_beside_another_file(
        two_photos, tmp_path, effnet, sig):
    out = tmp_path / "o"
    photo = two_photos / "chelsea.png"
    assert main(["protect", str(photo), "--out", str(out), "--quiet"]) == 0
    (before,) = _rows(out / "report.csv")
    assert before["success"] == "True"
    rerun = _start(["protect", str(photo), "--out", str(out), "--max-iter", "1", "--quiet"], tmp_path)
    assert _signal_when_replaced(rerun, out / "chelsea.png", sig), "the rerun ended before replacing the photo"
    status = rerun.wait(timeout=120)
    assert status == (-signal.SIGKILL if sig == signal.SIGKILL else 130), rerun.stderr.read() if rerun.stderr else ""
    left = _check_rows_describe_files(out, "report.csv", models.freeze(effnet))
    if sig == signal.SIGINT:
        assert [r["iterations"] for r in left] == ["1"], "Ctrl-C waits for the new photo's row"


@pytest.mark.slow  # a real model, one mnd process
def test_ctrl_c_right_after_the_first_png_of_a_fresh_folder_leaves_no_png_without_its_row(two_photos, tmp_path,
                                                                                             effnet):
    out = tmp_path / "fresh"
    run = _start(["attack", str(two_photos), "--out", str(out), "--batch-size", "1", "--max-iter", "2", "--quiet"],
                 tmp_path)
    assert _signal_when_replaced(run, out / "chelsea.png", signal.SIGINT)
    assert run.wait(timeout=120) == 130
    left = _check_rows_describe_files(out, "metrics.csv", models.freeze(effnet))
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(r["file"] for r in left) and "chelsea.png" in pngs
    assert not list(out.glob(".*.tmp"))


def test_another_methods_rerun_into_the_same_folder_is_refused_and_changes_nothing(toy_photos, tmp_path, capsys,
                                                                                   toy_classifier):
    out = tmp_path / "o"
    photo = toy_photos / "chelsea.png"
    assert main(["attack", str(photo), "--out", str(out), "--method", "bim", "--quiet"]) == 0
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    (row,) = _rows(out / "metrics.csv")
    assert row["method"] == "bim" and row["file"] == "chelsea.png" and row["sha256"] == _sha(out / "chelsea.png")
    capsys.readouterr()
    assert main(["attack", str(photo), "--out", str(out), "--method", "mnd", "--max-iter", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mnd: error: {out / 'chelsea.png'}: holds the output of 'mnd attack --method bim --model "
                   "efficientnet_lite0' (its row is in metrics.csv); this run ('mnd attack --method mnd --model "
                   "efficientnet_lite0') would replace it: give each method and setting its own --out"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept
    assert main(["attack", str(photo), "--out", str(out), "--method", "bim", "--targeted", "--quiet"]) == 2
    assert "holds the output of 'mnd attack --method bim" in capsys.readouterr().err
    assert main(["protect", str(photo), "--out", str(out), "--quiet"]) == 2
    assert "holds the output of 'mnd attack --method bim" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept
    assert main(["attack", str(photo), "--out", str(out), "--method", "bim", "--seed", "3", "--quiet"]) == 0, \
        "the same experiment may replace its own file"


def test_protect_keeps_other_photos_rows_and_a_format_change_keeps_the_png_row(toy_photos, tmp_path, capsys,
                                                                             toy_classifier):
    out = tmp_path / "o"
    assert main(["protect", str(toy_photos / "chelsea.png"), "--out", str(out), "--quiet"]) == 0
    assert main(["protect", str(toy_photos / "coffee.png"), "--out", str(out), "--quiet"]) == 0
    assert main(["protect", str(toy_photos / "chelsea.png"), "--out", str(out), "--format", "jpeg", "--quiet"]) == 0
    found = {r["file"]: r for r in _rows(out / "report.csv")}
    assert sorted(found) == ["chelsea.jpg", "chelsea.png", "coffee.png"]
    assert found["chelsea.jpg"]["format"] == "jpeg:90" and found["chelsea.png"]["format"] == "png"
    for name, row in found.items():
        assert row["sha256"] == _sha(out / name)
    assert main(["protect", str(toy_photos / "chelsea.png"), "--out", str(out), "--quiet"]) == 0, "rerun: replaces"
    again = [r["file"] for r in _rows(out / "report.csv")]
    assert sorted(again) == ["chelsea.jpg", "chelsea.png", "coffee.png"] and len(again) == 3


def test_an_old_report_without_file_columns_is_kept_and_its_rows_are_matched_by_name(toy_photos, tmp_path,
                                                                                      toy_classifier):
    out = tmp_path / "o"
    assert main(["protect", str(toy_photos / "chelsea.png"), "--out", str(out), "--quiet"]) == 0
    old_columns = rows_mod.known_headers(list(_rows(out / "report.csv")[0]))[0]
    assert "file" not in old_columns
    rows_mod.write_rows(out / "report.csv", _rows(out / "report.csv"), old_columns)
    assert main(["protect", str(toy_photos / "chelsea.png"), "--out", str(out), "--quiet"]) == 0
    (row,) = _rows(out / "report.csv")
    assert row["file"] == "chelsea.png" and row["sha256"] == _sha(out / "chelsea.png")


def test_a_killed_runs_temporary_files_are_removed_by_the_next_run_and_nothing_else(toy_photos, tmp_path,
                                                                                     toy_classifier):
    out = tmp_path / "o"
    out.mkdir()
    stale = [out / ".chelsea.png.k3j_x9a0.tmp", out / ".metrics.csv.abcdefgh.tmp", out / ".mnd-probe.12345678.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    mine = [out / ".notes.tmp", out / "draft.png.tmp", out / ".holiday.png.longer-than-8.tmp"]
    for path in mine:
        path.write_bytes(b"the user's")
    assert main(["attack", str(toy_photos / "chelsea.png"), "--out", str(out), "--method", "bim", "--quiet"]) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"the user's" for p in mine)
    assert remove_stale(tmp_path / "absent") == []


def test_a_second_run_into_a_locked_folder_is_refused(toy_photos, tmp_path, capsys, toy_classifier):
    out = tmp_path / "o"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert main(["attack", str(toy_photos / "chelsea.png"), "--out", str(out), "--method", "bim", "--quiet"]) == 2
        assert capsys.readouterr().err.strip() == (f"mnd: error: {out}: another mnd run is writing into this "
                                                   "folder; wait for it to end or choose another --out")
        assert main(["protect", str(toy_photos / "chelsea.png"), "--out", str(out), "--method", "bim", "--quiet"]) == 2
        assert list(out.iterdir()) == []
    finally:
        os.close(fd)
    assert main(["attack", str(toy_photos / "chelsea.png"), "--out", str(out), "--method", "bim", "--quiet"]) == 0


def test_publish_withdraws_the_old_row_before_the_file_is_replaced(tmp_path):
    """The order of writes, seen from inside: at the rename the CSV holds no row of the file."""
    seen: list[tuple[str, bytes]] = []
    (tmp_path / "a.png").write_bytes(b"old")
    with OutputFolder(tmp_path) as folder:
        staged = folder.stage("a.png", b"new")
        assert (tmp_path / "a.png").read_bytes() == b"old" and staged.temporary.read_bytes() == b"new"
        folder.publish([staged], withdraw=lambda: seen.append(("withdraw", (tmp_path / "a.png").read_bytes())),
                       record=lambda: seen.append(("record", (tmp_path / "a.png").read_bytes())))
        unpublished = folder.stage("b.png", b"never")
    assert seen == [("withdraw", b"old"), ("record", b"new")]
    assert not unpublished.temporary.exists() and not (tmp_path / "b.png").exists()


def test_held_interrupts_arrive_after_the_block():
    order: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            order.append("still running")
    assert order == ["still running"]


# --- bad inputs ------------------------------------------------------------------------------


def test_a_fifo_as_input_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "photo.png")
    done = subprocess.run([sys.executable, "-c", MAIN, "attack", str(tmp_path / "photo.png"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"mnd: error: {tmp_path / 'photo.png'}: not a regular file (a FIFO)\n"


def test_a_symbolic_link_loop_is_named_as_one(tmp_path, capsys):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    for name, problem in (("loop.png", "a symbolic link loop (the link points back at itself)"),
                          ("gone.png", "a symbolic link to a missing file")):
        assert main(["attack", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        assert capsys.readouterr().err == f"mnd: error: {tmp_path / name}: {problem}\n"


def test_a_failed_write_names_the_file(two_photos, tmp_path):
    """A file size limit (as a full disk would) while the PNG is written: the error names the file."""
    script = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)); " + MAIN)
    out = tmp_path / "o"
    code = (
        "import sys, torch; from mnd import models; from tests.conftest import MeanAbove\n"
        "class Toy(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        two = MeanAbove(0.2)(x); return torch.cat([two, torch.full((x.shape[0], 998), -50.0)], 1)\n"
        "models.load = lambda name: Toy()\n" + script.replace("; ", "\n"))
    done = subprocess.run([sys.executable, "-c", code, "attack", str(two_photos / "chelsea.png"), "--out", str(out),
                           "--method", "bim", "--quiet"], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"mnd: error: {out / 'chelsea.png'}: File too large"]
    assert not list(out.glob(".*.tmp")) and not (out / "metrics.csv").exists()


def test_a_truncated_metrics_csv_is_refused(toy_photos, tmp_path, capsys, toy_classifier):
    out = tmp_path / "o"
    assert main(["attack", str(toy_photos), "--out", str(out), "--method", "bim", "--quiet"]) == 0
    text = (out / "metrics.csv").read_text()
    fields = len(rows_mod.COLUMNS)
    cut_in_row = len(text) - text.rindex(",", 0, len(text) - 70)  # the last row loses its last fields
    left = len(next(csv.reader([text[: len(text) - cut_in_row].splitlines()[-1]])))
    assert 0 < left < fields - 1
    for cut, problem in ((1, "its last row is cut short"),
                         (cut_in_row, f"row 2 has {left} fields where the header has {fields}")):
        (out / "metrics.csv").write_text(text[: len(text) - cut])
        capsys.readouterr()
        assert main(["attack", str(toy_photos), "--out", str(out), "--method", "bim", "--quiet"]) == 2
        assert capsys.readouterr().err == (f"mnd: error: {out / 'metrics.csv'}: truncated or damaged: {problem}; "
                                           "move it away or choose another folder\n")
        assert (out / "metrics.csv").read_text() == text[: len(text) - cut], "refused, untouched"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--survive", "resize:1e-300"], "--survive: 'resize:1e-300': expected jpeg:Q (Q an integer from 1 to 100) or "
                                         "resize:S (S from 0.1 to below 1)"),
        (["--survive", "jpeg:²"], "--survive: 'jpeg:²': expected jpeg:Q"),
        (["--max-iter", "99999999999999999999"], "--max-iter: must be an integer from 1 to 1000000"),
        (["--max-iter", str(2**63)], "--max-iter: must be an integer from 1 to 1000000"),
    ],
)
def test_protect_numbers_out_of_range_are_one_line(two_photos, tmp_path, capsys, argv, message):
    assert main(["protect", str(two_photos / "chelsea.png"), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mnd: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_strength_file_or_preset_with_zero_iterations_is_refused(tmp_path):
    from mnd.experiments import load_preset
    from mnd.experiments.protect import load_strengths

    (tmp_path / "levels.toml").write_text("[low]\nmax_iter = 0\n")
    with pytest.raises(InputError, match=r"\[low\] max_iter = 0: must be an integer from 1 to 1000000"):
        load_strengths(tmp_path / "levels.toml")
    with pytest.raises(InputError, match="max_iter must be from 1 to 1000000, got 99999999999999999999"):
        load_preset("tiny", ["max_iter=99999999999999999999"])
