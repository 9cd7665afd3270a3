"""mnd.core.memory: with glibc, freed memory stays in the process and is reused without page faults.

Each case runs in a fresh interpreter: the setting is process-wide and cannot
be undone, and the test process's own allocation history must not matter.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="keep_freed_memory acts on glibc only"
)

BLOCK_MB = 64  # above glibc's largest adaptive mmap threshold (32 MB): by default an mmap of its own, every time

SCRIPT = f"""
import resource, sys, torch
from mnd.core import memory

kept = memory.keep_freed_memory() if sys.argv[1] == "keep" else False

def touch():
    block = torch.empty({BLOCK_MB} * 2**20 // 4)  # float32
    block.fill_(1.0)  # every page written
    del block

for _ in range(12):  # the heap settles after a few rounds (alignment leaves holes a block does not fit)
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    touch()
print(int(kept), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without the switch (a developer may have exported it), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k != "MND_KEEP_FREED_MEMORY"}, "OMP_NUM_THREADS": "1", **extra}


def _run(mode: str, **extra: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         env=_environment(**extra))
    kept, faults = out.stdout.split()
    return kept == "1", int(faults)


def test_a_freed_block_is_reused_without_page_faults() -> None:
    pages = 3 * BLOCK_MB * 2**20 // resource.getpagesize()  # three blocks
    kept_default, faults_default = _run("default")
    if faults_default < pages // 2:
        pytest.skip(f"this kernel maps three {BLOCK_MB} MB blocks in {faults_default} faults (huge pages): nothing to save")
    kept, faults = _run("keep")
    assert not kept_default and kept
    assert faults < pages // 20, f"{faults} page faults for {pages} pages of blocks freed before"


def test_the_environment_turns_it_off() -> None:
    kept, _ = _run("keep", MND_KEEP_FREED_MEMORY="0")
    assert not kept


def test_the_settings_glibc_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly the documented mallopt calls: trimming off (-1, not a large number) and no mmap of its own."""
    from mnd.core import memory

    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    class FakeLibc:  # a function as its attribute, as ctypes gives (argtypes can be set on it)
        pass

    libc = FakeLibc()
    libc.mallopt = mallopt  # type: ignore[attr-defined]
    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.delenv(memory.ENV, raising=False)
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libc)
    assert memory.keep_freed_memory() and memory.keep_freed_memory()
    assert calls == [(-1, -1), (-4, 0)]  # M_TRIM_THRESHOLD, M_MMAP_MAX from malloc.h; once only


def test_the_command_line_keeps_freed_memory() -> None:
    code = "from mnd.cli.main import main; from mnd.core import memory; main(['models']); print(memory._done)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_environment())
    assert out.stdout.strip().splitlines()[-1] == "True"
