"""Atomic folder writes: a complete folder exists at every instant, even when the writer is killed."""

from __future__ import annotations

import random
import stat
import subprocess
import sys
import threading
import time

from omni_gpt2o.fileio import atomic_dir, atomic_path

WRITER = """
import os, sys
from pathlib import Path
from omni_gpt2o.fileio import atomic_dir
n = 0
while True:
    n += 1
    with atomic_dir(Path(sys.argv[1])) as tmp:
        (tmp / "weights").write_bytes(n.to_bytes(8, "little") + os.urandom(1 << 20))
        (tmp / "config.json").write_text(str(n))
"""


def whole(folder) -> bool:
    """Both files, and the config names the same write as the weights."""
    config = folder / "config.json"
    return config.is_file() and (folder / "weights").read_bytes()[:8] == int(config.read_text()).to_bytes(8, "little")


def test_a_writer_killed_at_random_points_always_leaves_a_whole_folder(tmp_path):
    last = tmp_path / "last"
    rng = random.Random(0)
    for _ in range(6):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(last)])
        time.sleep(rng.uniform(0.5, 1.5))
        writer.kill()  # SIGKILL: no handler runs
        writer.wait()
        assert whole(last)
    with atomic_dir(last) as tmp:  # the next write removes what killed writers left beside it
        (tmp / "weights").write_bytes((7).to_bytes(8, "little"))
        (tmp / "config.json").write_text("7")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_readers_never_find_the_folder_missing_while_it_is_replaced(tmp_path):
    last = tmp_path / "last"
    with atomic_dir(last) as tmp:
        (tmp / "config.json").write_text("0")
    misses, done = [], threading.Event()

    def read() -> None:
        while not done.is_set():
            if not (last / "config.json").is_file():
                misses.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(200):
        with atomic_dir(last) as tmp:
            (tmp / "config.json").write_text(str(n))
    done.set()
    reader.join()
    assert misses == [] and (last / "config.json").read_text() == "199"


def test_without_an_atomic_swap_a_writer_killed_between_renames_loses_nothing(tmp_path, monkeypatch):
    """Where the system cannot swap folders (Windows), the old folder waits as `.NAME.old`; a writer killed
    between the two renames leaves it there, and the next write puts it back before anything else."""
    import pytest

    from omni_gpt2o import fileio

    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    target = tmp_path / "last"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("good")
    with atomic_dir(target) as tmp:  # the two-rename path works
        (tmp / "weights").write_text("better")
    assert (target / "weights").read_text() == "better" and not (tmp_path / ".last.old").exists()
    target.rename(tmp_path / ".last.old")  # as a kill between `last -> .last.old` and `tmp -> last` leaves it
    with pytest.raises(RuntimeError):
        with atomic_dir(target):
            raise RuntimeError("the next writer fails too")
    assert (target / "weights").read_text() == "better"


def test_atomic_writes_are_shared_as_plain_writes_are(tmp_path):
    # The temporary file and folder behind an atomic write are private (mkstemp, mkdtemp); what they become
    # takes the mode a plain write gets under the umask, so a checkpoint is as readable as any other file.
    with atomic_path(tmp_path / "samples.png") as tmp:
        tmp.write_bytes(b"png")
    with atomic_dir(tmp_path / "checkpoint") as tmp:
        (tmp / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "plain.png").write_bytes(b"png")
    (tmp_path / "plain").mkdir()

    def mode(name: str) -> int:
        return stat.S_IMODE((tmp_path / name).stat().st_mode)

    assert mode("samples.png") == mode("plain.png") and mode("checkpoint") == mode("plain")
