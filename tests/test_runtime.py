"""Two CPU processes with gloo: both ranks train on their shard, metrics are reduced, only rank 0 writes."""

from __future__ import annotations

import json
import os
import random
import re
import socket

import pytest
import torch.multiprocessing as mp

from segzoo.core.errors import SegzooError
from segzoo.train.runtime import Placement, expand_nodelist, placement, slurm_port

SLURM = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0",
         "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "987654321"}


@pytest.mark.parametrize("env, expected", [
    ({}, Placement()),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, Placement(1, 2, 1, "RANK/WORLD_SIZE")),
    # Lightning Fabric: LOCAL_RANK and WORLD_SIZE, no RANK
    ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, Placement(1, 2, 1, "LOCAL_RANK/WORLD_SIZE")),
    ({"LOCAL_RANK": "1", "WORLD_SIZE": "4", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
     Placement(3, 4, 1, "LOCAL_RANK/WORLD_SIZE")),
    ({"LOCAL_RANK": "0"}, Placement(0, 1, 0)),  # a LOCAL_RANK alone says nothing of a job
    (SLURM, Placement(3, 4, 1, "SLURM (srun)", "gpu07", 15000 + 4321)),
    ({**SLURM, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"},
     Placement(1, 2, 1, "SLURM (srun)", "10.0.0.1", 1234)),
    # torchrun under srun: torchrun's RANK wins over SLURM's task id
    ({**SLURM, "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, Placement(5, 8, 1, "RANK/WORLD_SIZE")),
    # the batch script's own shell (no srun step) is one process, whatever SLURM_NTASKS says
    ({k: v for k, v in SLURM.items() if k != "SLURM_STEP_ID"}, Placement(0, 1, 0)),
])
def test_placement_over_the_launchers_environments(env, expected):
    assert placement(env, group=False) == expected


def test_an_initialised_process_group_decides_before_the_environment(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert placement({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "1"}, group=True) == Placement(
        1, 2, 1, "the initialised process group")


@pytest.mark.parametrize("env, says", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 of 2"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not a whole number"),
    ({"LOCAL_RANK": "0", "WORLD_SIZE": "4", "NODE_RANK": "1"}, "set RANK"),
    ({**SLURM, "SLURM_JOB_NODELIST": "gpu[a-b]"}, "set MASTER_ADDR"),
])
def test_a_broken_launcher_environment_is_one_line(env, says):
    with pytest.raises(SegzooError, match=re.escape(says)):
        placement(env, group=False)


@pytest.mark.parametrize("text, hosts", [
    ("node01", ["node01"]),
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("a[8-10],b2", ["a8", "a9", "a10", "b2"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("gpu[007-008].cluster,login", ["gpu007.cluster", "gpu008.cluster", "login"]),
])
def test_slurm_node_lists_expand(text, hosts):
    assert expand_nodelist(text) == hosts


def test_the_slurm_port_is_the_same_for_every_task_of_a_job():
    assert slurm_port("987654321") == 15000 + 4321 and slurm_port("") == 29500


def _free_port(low: int = 0, high: int = 0) -> int:
    """A free port: any, or the first free one in [low, high) (SLURM's port comes from the job id, in that range)."""
    start = random.randrange(low, high) if high else 0
    for port in [*range(start, high), *range(low, start)] if high else [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise AssertionError("no free port")


def _launcher_env(launcher: str, rank: int, world: int, port: int) -> dict[str, str]:
    """What each launcher sets for a process: torchrun all of it, Fabric no RANK, SLURM only its own variables."""
    if launcher == "torchrun":
        return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port)}
    if launcher == "fabric":
        return {"LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port)}
    assert launcher == "slurm" and 15000 <= port < 25000  # srun: the master and port come from the node list, job id
    return {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": str(world),
            "SLURM_STEP_NUM_TASKS": str(world), "SLURM_STEP_ID": "0", "SLURM_JOB_NODELIST": "127.0.0.1",
            "SLURM_JOB_ID": str(424240000 + port - 15000)}


def _rank_main(rank: int, world: int, port: int, data: str, out: str, report_dir: str,
               launcher: str = "torchrun") -> None:
    for name in [k for k in os.environ if k.startswith("SLURM_") or k in ("RANK", "MASTER_ADDR", "MASTER_PORT")]:
        del os.environ[name]
    os.environ.update(_launcher_env(launcher, rank, world, port))
    import torch

    torch.set_num_threads(1)
    from segzoo.train import TrainConfig, train

    cfg = TrainConfig(model="alexnet-fcn8s", backbone_kwargs={"fc_channels": 16}, data=data, out_dir=out,
                      epochs=1, batch_size=2, input_size=64, scale=(1.0, 1.0), device="cpu", progress=False)
    result = train(cfg, log=lambda _: None)
    weights = result.model.state_dict()["head.score_fr.weight"]
    with open(os.path.join(report_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"metrics": result.final_metrics, "written": [str(p) for p in result.files_written],
                   "loss": result.history[-1].train_loss, "steps": result.history[-1].step,
                   "weight_sum": float(weights.double().sum())}, f)


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path, demo_data):
    r0, r1 = _run_two_ranks(_rank_main, demo_data, tmp_path)
    assert r0["steps"] == r1["steps"] == 2  # 8 images, 2 ranks x batch 2: 2 steps each
    assert r0["metrics"] == r1["metrics"]  # the confusion matrix was summed over ranks
    assert r0["metrics"]["pixels"] == 4 * 64 * 64 - _void_pixels(demo_data)  # every val pixel counted once
    assert r0["loss"] == r1["loss"] and r0["weight_sum"] == r1["weight_sum"]  # averaged loss, synced weights
    assert r1["written"] == [] and {p.rsplit("/", 1)[1] for p in r0["written"]} >= {"last.pt", "metrics.jsonl"}


@pytest.mark.slow
def test_fabric_and_slurm_environments_make_one_two_process_job(tmp_path, demo_data):
    """LOCAL_RANK/WORLD_SIZE alone (Lightning Fabric) and SLURM's variables alone (srun) each make one 2-process job
    that trains as test_two_process_gloo_run's torchrun-style one does (the same checks), and the two runs agree on
    every number: same steps, loss, weights and metrics."""
    runs = {name: _run_two_ranks(_rank_main, demo_data, tmp_path / name, launcher=name) for name in ("fabric", "slurm")}
    for name, (r0, r1) in runs.items():
        assert r0["steps"] == r1["steps"] == 2, name  # two ranks, not two rank-0 runs of 4 steps each
        assert r0["metrics"]["pixels"] == 4 * 64 * 64 - _void_pixels(demo_data), name  # val pixels counted once
        assert (r0["loss"], r0["weight_sum"], r0["metrics"]) == (r1["loss"], r1["weight_sum"], r1["metrics"]), name
        assert r1["written"] == [] and r0["written"], name  # one writer: no lock refused a second rank 0
    fabric, slurm = runs["fabric"][0], runs["slurm"][0]
    assert (fabric["loss"], fabric["weight_sum"], fabric["metrics"]) == (slurm["loss"], slurm["weight_sum"],
                                                                         slurm["metrics"])


def _run_two_ranks(target, data, tmp_path, launcher: str | None = None) -> list[dict]:
    """Spawn ``target`` as ranks 0 and 1 of a gloo group; each writes rank{r}.json, returned in rank order."""
    reports = tmp_path / "reports"
    reports.mkdir(parents=True)
    port = _free_port(15000, 25000) if launcher == "slurm" else _free_port()
    extra = (launcher,) if launcher else ()
    mp.spawn(target, args=(2, port, str(data), str(tmp_path / "run"), str(reports), *extra), nprocs=2)
    return [json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1)]


MIXED = {"model": "alexnet-fcn8s", "backbone_kwargs": {"fc_channels": 16, "dropout": 0.0}, "input_size": 64,
         "scale": (1.0, 1.0), "device": "cpu", "progress": False, "val_split": None, "epochs": 1,
         "pixel_fraction": 0.5, "weak_weight": 1.0, "weak_pool": "lse", "optimizer": "sgd-poly", "momentum": 0.0,
         "weight_decay": 0.0, "lr": 1000.0}  # lr 1000: one step changes every weight far beyond float32 rounding


def _mixed_rank_main(rank: int, world: int, port: int, data: str, out: str, report_dir: str) -> None:
    os.environ.update(_launcher_env("torchrun", rank, world, port))
    import torch

    torch.set_num_threads(1)
    from segzoo.train import TrainConfig, train

    result = train(TrainConfig(**MIXED, data=data, out_dir=out, batch_size=2, accumulate=2), log=lambda _: None)
    last = result.history[-1]
    with open(os.path.join(report_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"steps": last.step, "kinds": [last.mask_samples, last.image_samples], "loss": last.train_loss}, f)


@pytest.mark.slow
def test_two_ranks_of_mixed_batches_accumulated_train_as_one_process_of_their_total_batch(tmp_path, demo_data):
    """2 ranks x 2 accumulated batches of 2 (1 masked + 1 image-labelled each) make the same step as one process's
    batch of 8: each rank shards the mixed stream, and the cross-entropy's valid pixels and the image-labelled
    samples are counted over every rank and micro-batch (docs/weak-labels.md)."""
    import torch

    import segzoo
    from segzoo.train import TrainConfig, train

    r0, r1 = _run_two_ranks(_mixed_rank_main, demo_data, tmp_path)
    assert r0 == r1 and r0["steps"] == 1 and r0["kinds"] == [4, 4]  # 4 masked + 4 image-labelled, over both ranks
    start = train(TrainConfig(**{**MIXED, "lr": 1e-30}, data=str(demo_data), out_dir=str(tmp_path / "start"),
                              batch_size=8), log=lambda _: None).model.state_dict()
    single = train(TrainConfig(**MIXED, data=str(demo_data), out_dir=str(tmp_path / "one"), batch_size=8),
                   log=lambda _: None)
    assert single.history[-1].step == 1
    two = segzoo.load_model(tmp_path / "run" / "last.pt").state_dict()
    one = single.model.state_dict()
    changed = [k for k in start if not torch.equal(one[k], start[k])]
    assert changed == [k for k in start if not torch.equal(two[k], start[k])] and changed
    for k in changed:
        a, b = one[k] - start[k], two[k] - start[k]
        assert torch.allclose(a, b, rtol=0, atol=1e-3 * float(a.abs().max())), k


def _void_pixels(root) -> int:
    from segzoo.data import open_dataset

    ds = open_dataset(root, "val")
    return sum(int((ds.load(i)[1] == 255).sum()) for i in range(len(ds)))


def _cli_rank_main(rank: int, world: int, port: int, data: str, out: str, report_dir: str) -> None:
    import contextlib
    import io

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch

    torch.set_num_threads(1)
    from segzoo.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", "--model", "alexnet-fcn8s", "--fc-channels", "16", "--data", data, "--epochs", "1",
                     "--batch-size", "2", "--input-size", "64", "--scale", "1,1", "--device", "cpu", "--no-progress",
                     "--out", out])
    with open(os.path.join(report_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"code": code, "stdout": printed.getvalue()}, f)


@pytest.mark.slow
def test_only_rank_0_prints_under_torchrun(tmp_path, demo_data):
    r0, r1 = _run_two_ranks(_cli_rank_main, demo_data, tmp_path)
    assert r0["code"] == r1["code"] == 0
    assert "finished in" in r0["stdout"] and "final validation metrics (epoch 1)" in r0["stdout"]
    assert r1["stdout"] == ""


# -- --amp on a CPU: bf16 only where its measured matmul peak is at least 2x fp32's ---------------------------------
def test_amp_on_a_cpu_where_bf16_cannot_pay_says_so_once_and_trains_fp32(monkeypatch):
    import torch

    from segzoo.train import runtime

    monkeypatch.setattr(runtime, "bf16_matmul_speedup", lambda device_type="cpu": 0.43)
    lines = []
    rt = runtime.setup("cpu", True, log=lines.append)
    assert rt.amp_dtype is None and not rt.channels_last
    assert len(lines) == 1 and "0.43x" in lines[0] and "training in fp32" in lines[0] and "--amp force" in lines[0]
    monkeypatch.setattr(runtime, "bf16_matmul_speedup", lambda device_type="cpu": 2.6)
    rt = runtime.setup("cpu", True, log=lines.append)
    assert rt.amp_dtype == torch.bfloat16 and rt.channels_last and "2.60x" in lines[-1]


def test_amp_force_trains_bf16_without_measuring_and_no_amp_never_measures(monkeypatch):
    import torch

    from segzoo.train import runtime

    def boom(device_type: str = "cpu") -> float:
        raise AssertionError("measured")

    monkeypatch.setattr(runtime, "bf16_matmul_speedup", boom)
    assert runtime.setup("cpu", "force", log=print).amp_dtype == torch.bfloat16
    assert runtime.setup("cpu", None).amp_dtype is None and runtime.setup("cpu", False).amp_dtype is None


def test_the_bf16_speedup_is_measured_once_per_process(monkeypatch):
    from segzoo.train import runtime

    calls = []
    monkeypatch.setattr(runtime, "matmul_speedup", lambda dtype, device: calls.append(device) or 1.5)
    runtime.bf16_matmul_speedup.cache_clear()
    try:
        assert runtime.bf16_matmul_speedup("cpu") == runtime.bf16_matmul_speedup("cpu") == 1.5
        assert calls == ["cpu"]
    finally:
        runtime.bf16_matmul_speedup.cache_clear()


@pytest.mark.parametrize("value", ["yes", 2, "Force"])
def test_an_amp_value_other_than_force_is_a_user_error(value):
    from segzoo.core.errors import SegzooError
    from segzoo.train import TrainConfig, runtime

    with pytest.raises(SegzooError, match="force"):
        runtime.setup("cpu", value)
    with pytest.raises(SegzooError, match="force"):
        TrainConfig(model="m", amp=value).check()


@pytest.mark.parametrize("compile_s, eager, compiled, steps, pays", [
    (30.0, 1.0, 0.5, 60, True),  # 30 s saved back after 60 half-second savings: exactly the first epoch
    (30.0, 1.0, 0.5, 59, False),
    (1.0, 0.5, 0.6, 10_000, False),  # a slower compiled step never pays
])
def test_compile_pays_only_within_the_first_epoch(compile_s, eager, compiled, steps, pays):
    from segzoo.train.runtime import compile_payback_steps, compile_pays

    assert compile_pays(compile_s, eager, compiled, steps) is pays
    assert compile_payback_steps(compile_s, eager, compiled) == (compile_s / (eager - compiled) if eager > compiled
                                                                 else float("inf"))
