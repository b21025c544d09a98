"""A run folder is one run's: an existing run is never overwritten or mixed with another, one process at a time
holds it, and a stopped run (Ctrl-C, SIGTERM) keeps its last good checkpoint and says how to go on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from segzoo.cli import main
from segzoo.core.errors import TrainingError
from segzoo.train.run_folder import LOCK_NAME, RunLock, check_new_run
from tests.test_cli import TINY, digest, refused


@pytest.fixture
def run(tiny_run):
    """One finished 1-epoch run, shared: tests work on copies of it."""
    return tiny_run


def copy(run, tmp_path, name="copy"):
    return shutil.copytree(run, tmp_path / name)


def test_a_folder_with_best_pt_but_no_last_pt_is_a_run_and_is_never_overwritten(run, demo_data, tmp_path, capsys):
    """Ctrl-C after epoch 1 with --save-every-epochs 0 leaves best.pt and config.json, no last.pt (so no logs)."""
    r = copy(run, tmp_path)
    (r / "last.pt").unlink()
    before = digest(r)
    refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(r)], "already holds part of a run",
            "best.pt", "no last.pt", "another --out")
    assert digest(r) == before
    for name in ("best.pt", "config.json", "metrics.jsonl", "metrics.csv"):  # any one of them is a run
        only = tmp_path / f"only-{name}"
        only.mkdir()
        shutil.copy(r / name, only / name)
        with pytest.raises(TrainingError, match="already holds"):
            check_new_run(only)
    check_new_run(tmp_path / "new")  # a new or empty folder is fine
    (tmp_path / "empty").mkdir()
    check_new_run(tmp_path / "empty")


def test_resume_into_a_folder_holding_another_run_is_refused(run, demo_data, tmp_path, capsys):
    a, b = copy(run, tmp_path, "a"), copy(run, tmp_path, "b")
    before = digest(b)
    refused(capsys, ["train", "--resume", str(a / "last.pt"), "--out", str(b), "--epochs", "2"],
            "holds another run", f"--out {a}")
    assert digest(b) == before


def test_resume_into_a_new_folder_cuts_the_logs_back_to_the_checkpoint(run, tmp_path, capsys):
    """A crash between writing the logs and the checkpoint leaves the logs an epoch ahead: resuming cuts them back.
    Fixed temporary names in the folder (the old ``.{name}.tmp``) do not get in the way."""
    a = copy(run, tmp_path, "a")
    records = (a / "metrics.jsonl").read_text().splitlines()
    with open(a / "metrics.jsonl", "a") as f:
        f.write(json.dumps({**json.loads(records[-1]), "epoch": 2}) + "\n")
    for name in ("config.json", "metrics.jsonl", "metrics.csv"):
        (a / f".{name}.tmp").mkdir()
    # resuming a finished 1-epoch run at --epochs 1 trains nothing: only the logs are rewritten
    assert main(["train", "--resume", "--out", str(a), "--epochs", "1"]) == 0
    assert (a / "metrics.jsonl").read_text().splitlines() == records
    assert len((a / "metrics.csv").read_text().splitlines()) == 2
    assert not (a / LOCK_NAME).exists()
    # and into a folder of its own, which then holds the same logs
    c = tmp_path / "c"
    assert main(["train", "--resume", str(a / "last.pt"), "--out", str(c), "--epochs", "1"]) == 0
    assert (c / "metrics.jsonl").read_text().splitlines() == records and not (c / LOCK_NAME).exists()
    capsys.readouterr()


def test_resuming_with_fewer_epochs_than_done_is_refused(run, tmp_path, capsys):
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["epoch"], ckpt["batches_done"] = 3, 1
    r = tmp_path / "r"
    r.mkdir()
    torch.save(ckpt, r / "last.pt")
    before = digest(r)
    refused(capsys, ["train", "--resume", "--out", str(r), "--epochs", "3"], "--epochs 3 is fewer",
            "3 epoch(s) and 1 step(s) of epoch 4", "--epochs 4 or more")
    assert digest(r) == before


def test_a_second_run_into_a_locked_folder_stops_naming_the_holder(demo_data, tmp_path, capsys):
    out = tmp_path / "busy"
    with RunLock(out):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(out)], "in use by another segzoo run",
                f"pid {os.getpid()} on host {socket.gethostname()}")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
        with pytest.raises(TrainingError, match="in use"), RunLock(out):
            pass
    assert not out.exists()  # the lock made the folder and, nothing written, took it away again


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    notes = []
    with RunLock(out, notice=notes.append):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {dead.pid}" in notes[0] and "took over" in notes[0]
    assert not (out / LOCK_NAME).exists() and out.is_dir()


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_a_run_cleanly_keeps_its_checkpoint_and_says_how_to_resume(demo_data, tmp_path, capsys):
    """What Docker, Slurm and Kubernetes send: exit 143, one line with the resume command, no temporary file,
    the lock released; while the run holds the folder, another taker is refused. (In-process: a thread watches
    for the first checkpoint, tries the lock, then signals this process, which runs the command.)"""
    out = tmp_path / "run"
    seen: dict[str, object] = {}
    after = []
    previous = signal.signal(signal.SIGTERM, lambda *_: after.append("late"))  # main puts this one back
    finished = threading.Event()  # the command returned: never signal after that

    def watch() -> None:
        deadline = time.time() + 120
        while not (out / "last.pt").exists() and time.time() < deadline and not finished.is_set():
            time.sleep(0.02)
        if finished.is_set():
            return
        try:
            with RunLock(out):
                seen["lock"] = "taken"
        except TrainingError as exc:
            seen["lock"] = str(exc)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rc = main(["train", *TINY, "--epochs", "1000", "--save-every-steps", "1", "--val-split", "none", "--data",
                   str(demo_data), "--out", str(out)])
    finally:
        finished.set()
        watcher.join(10)  # a signal sent meanwhile lands in `after`, never in pytest's default handler
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert rc == 143 and not after, err
    assert f"in use by another segzoo run (pid {os.getpid()}" in str(seen["lock"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("segzoo: terminated (SIGTERM); stopped in epoch")
    assert f"continue with 'segzoo train --resume --out {out}'" in lines[0]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_NAME]
    ckpt = torch.load(out / "last.pt", weights_only=True)  # whole, and resumable
    assert ckpt["step"] >= 1 and {"optimizer", "rng", "config"} <= set(ckpt)


# -- resume="auto": one command for a first start and every restart ------------------------------------------
def _auto(out, **kw):
    from segzoo.train import TrainConfig
    from segzoo.train.run_folder import auto_resume

    notes: list[str] = []
    cfg = auto_resume(TrainConfig(model="alexnet-fcn8s", out_dir=str(out), resume="auto"), notice=notes.append, **kw)
    return cfg.resume, notes


def test_resume_auto_starts_in_an_empty_or_missing_folder(tmp_path):
    assert _auto(tmp_path / "new") == (False, [])
    assert not (tmp_path / "new").exists()  # deciding writes nothing
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    assert _auto(tmp_path / "empty") == (False, [])
    assert (tmp_path / "empty" / "notes.txt").read_text() == "mine"


def test_resume_auto_continues_a_folder_with_last_pt_and_changes_nothing(run, tmp_path):
    r = copy(run, tmp_path)
    before = digest(r)
    assert _auto(r) == (True, [])
    assert digest(r) == before


def test_resume_auto_removes_only_a_checkpointless_runs_own_files_by_name(run, tmp_path):
    r = copy(run, tmp_path)
    for name in ("last.pt", "best.pt"):
        (r / name).unlink()
    (r / "notes.txt").write_text("mine")
    (r / "tensorboard").mkdir()
    resume, notes = _auto(r)
    assert resume is False and "stopped before its first checkpoint" in notes[0]
    assert sorted(p.name for p in r.iterdir()) == ["notes.txt", "tensorboard"]  # no lock file left either
    check_new_run(r)  # a new run may start there now


def test_resume_auto_on_another_rank_decides_but_removes_nothing(run, tmp_path):
    r = copy(run, tmp_path)
    (r / "last.pt").unlink()
    (r / "best.pt").unlink()
    before = digest(r)
    assert _auto(r, main=False) == (False, [])
    assert digest(r) == before


def test_resume_auto_refuses_best_pt_without_last_pt_and_a_missing_out(run, tmp_path):
    from segzoo.train import TrainConfig
    from segzoo.train.run_folder import auto_resume

    r = copy(run, tmp_path)
    (r / "last.pt").unlink()
    before = digest(r)
    with pytest.raises(TrainingError, match="holds best.pt but no last.pt"):
        _auto(r)
    assert digest(r) == before
    with pytest.raises(TrainingError, match="needs one: give --out"):
        auto_resume(TrainConfig(model="alexnet-fcn8s", resume="auto"))


def test_resume_auto_waits_its_turn_behind_a_running_run(run, tmp_path):
    r = copy(run, tmp_path)
    (r / "last.pt").unlink()
    (r / "best.pt").unlink()
    before = digest(r)
    with RunLock(r), pytest.raises(TrainingError, match="in use by another segzoo run"):
        _auto(r)
    assert digest(r) == before


def test_restart_removes_only_segzoos_files_of_a_run_without_a_checkpoint(tmp_path):
    from segzoo.core.errors import TrainingError
    from segzoo.train.run_folder import restart_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "m", "epochs": 1, "out_dir": "run"}')
    (run / "class_weights.json").write_text("{}")
    (run / "mine.txt").write_text("x")
    assert restart_run(run) == ["config.json", "class_weights.json"] and {p.name for p in run.iterdir()} == {"mine.txt"}
    (run / "config.json").write_text('{"something": "else"}')
    with pytest.raises(TrainingError, match="is not a segzoo run's config"):
        restart_run(run)
    (run / "best.pt").write_text("x")
    with pytest.raises(TrainingError, match="holds best.pt"):
        restart_run(run)
    assert (run / "best.pt").exists() and (run / "config.json").exists()


def test_keep_checkpoints_keeps_what_is_asked_and_never_the_only_one(tmp_path):
    from segzoo.train.run_folder import keep_checkpoints

    (tmp_path / "last.pt").write_text("x")
    assert keep_checkpoints(tmp_path, "best") == [] and (tmp_path / "last.pt").exists()  # no best.pt: nothing goes
    (tmp_path / "best.pt").write_text("x")
    assert keep_checkpoints(tmp_path, "both") == []
    assert keep_checkpoints(tmp_path, "best") == ["last.pt"] and not (tmp_path / "last.pt").exists()
