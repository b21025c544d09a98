"""Signals at any moment: a SIGTERM inside torch.save waits for the file, SIGTERM to the whole process group (what
``timeout`` and SLURM send) stops train and predict with 143 and no traceback, and loader workers die with their
parent. The process tests run the real command in its own session and signal it for real, with bounded waits."""

from __future__ import annotations

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

from segzoo.core.files import atomic_write
from segzoo.core.signals import deferred_signals

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")


class Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise Stop(signum)


class _SignalsMidWrite:
    """A file that sends this process SIGTERM during torch.save's third write (inside its C++ writer)."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_sigterm_inside_torch_save_without_deferral_is_a_cxx_error(tmp_path):
    """The failure the deferral exists for: the handler's exception raised inside PyTorch's writer."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with open(tmp_path / "x.pt", "wb") as f, pytest.raises((RuntimeError, Stop)) as info:
            torch.save({"w": torch.zeros(1000)}, _SignalsMidWrite(f))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.type is RuntimeError  # not the handler's own exception


def test_sigterm_inside_an_atomic_torch_save_comes_after_the_file_is_whole(tmp_path):
    target = tmp_path / "last.pt"
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with pytest.raises(Stop):
            atomic_write(target, lambda f: torch.save({"w": torch.arange(1000.0)}, _SignalsMidWrite(f)))
        assert signal.getsignal(signal.SIGTERM) is _raise_stop  # the handler it held back is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(1000.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file


def test_held_signals_are_delivered_once_each_and_nested_holds_pass_them_out():
    got = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    try:
        with deferred_signals():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                assert got == []
            assert got == []  # still held by the outer block
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the real commands, signalled as timeout and SLURM do ------------------------------------------------------
SEGZOO = [sys.executable, "-m", "segzoo"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
WAIT = 120  # seconds; a loaded 2-core machine starts Python and torch slowly


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """The command in a session of its own, so a signal to its process group reaches it and its workers only."""
    return subprocess.Popen([*SEGZOO, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV,
                            start_new_session=True)


def _wait_for(check, proc: subprocess.Popen, what: str) -> None:
    end = time.monotonic() + WAIT
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended ({proc.returncode}) before {what}")
        if time.monotonic() > end:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no {what} within {WAIT}s")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it holds no memory and runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return code, log.read_text()


def _train_args(data: Path, out: Path) -> list[str]:
    return ["train", "--model", "alexnet-fcn8s", "--fc-channels", "16", "--data", str(data), "--epochs", "100",
            "--batch-size", "2", "--input-size", "64", "--scale", "1,1", "--device", "cpu", "--no-progress",
            "--workers", "2", "--save-every-steps", "1", "--out", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("second", [False, True], ids=["one-sigterm", "two-sigterms"])
def test_sigterm_to_the_process_group_stops_train_with_workers_as_143(tmp_path, demo_data, second):
    log, out = tmp_path / "log.txt", tmp_path / "run"
    proc = _start(_train_args(demo_data, out), log)
    _wait_for(lambda: (out / "last.pt").exists() and len(_children(proc.pid)) >= 2, proc, "a checkpoint and workers")
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    if second:
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
    code, text = _finish(proc, log)
    assert code in ((143, -signal.SIGTERM) if second else (143,)), text  # after its clean-up the default may end it
    assert "Traceback" not in text and "DataLoader worker" not in text, text
    assert f"the last good checkpoint is {out / 'last.pt'}: continue with 'segzoo train --resume --out {out}'" in text
    assert not [w for w in workers if _alive(w)]


def _predict_setup(tmp_path: Path, n: int = 40, size: int = 192) -> tuple[Path, Path]:
    import segzoo

    ckpt = tmp_path / "m.pt"
    segzoo.save_model(segzoo.create_model("alexnet-fcn8s", 3, backbone_kwargs={"fc_channels": 16}), ckpt)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    return ckpt, images


def _start_predict(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``predict --workers 2`` over 40 images, returned once it wrote its first prediction (its workers running)."""
    ckpt, images = _predict_setup(tmp_path)
    log, out = tmp_path / "log.txt", tmp_path / "pred"
    proc = _start(["predict", str(images), "--checkpoint", str(ckpt), "--out", str(out), "--workers", "2",
                   "--device", "cpu", "--no-progress", "--quiet"], log)
    _wait_for(lambda: out.exists() and any(out.glob("*.png")) and len(_children(proc.pid)) >= 2, proc,
              "a first prediction and workers")
    return proc, log


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_predict_with_workers_as_143(tmp_path):
    proc, log = _start_predict(tmp_path)
    os.killpg(proc.pid, signal.SIGTERM)
    code, text = _finish(proc, log)
    assert code == 143, text
    assert "Traceback" not in text and text.strip().endswith("segzoo: terminated (SIGTERM)"), text


@pytest.mark.slow
def test_kill_9_of_predict_leaves_no_orphan_workers(tmp_path):
    proc, _ = _start_predict(tmp_path)
    workers = _children(proc.pid)
    proc.kill()  # SIGKILL to the parent alone: no handler, no clean-up of its own
    proc.wait(timeout=WAIT)
    end = time.monotonic() + 30
    while [w for w in workers if _alive(w)] and time.monotonic() < end:
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them to the machine if the test fails
        os.kill(w, signal.SIGKILL)
    assert not left, f"orphan workers {left} outlived their parent"


LIVE_LOADER = """
import torch
from segzoo.data import ShardedSampler, make_loader
class D(torch.utils.data.Dataset):
    def __len__(self): return 8
    def __getitem__(self, i):
        return {"image": torch.zeros(3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.long), "index": i}
loader = make_loader(D(), ShardedSampler(8, False), 2, 2)
batches = iter(loader)
next(batches)
print("exiting", flush=True)
"""


def test_a_process_exits_with_its_loader_workers_still_alive(tmp_path):
    """Workers ignore SIGTERM, and multiprocessing's exit handler sends daemonic children SIGTERM and waits for them
    without a limit: a loader still referenced at exit hung its process (pytest itself, after the suite). segzoo's
    own exit handler kills them first, quietly."""
    script = tmp_path / "live_loader.py"
    script.write_text(LIVE_LOADER)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and r.stdout == "exiting\n"
    assert "Traceback" not in r.stderr and "killed by signal" not in r.stderr
