"""Two CPU processes with gloo: both ranks train on their shard, metrics are reduced, only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, data: str, out: str, report_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
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


def _run_two_ranks(target, data, tmp_path) -> list[dict]:
    """Spawn ``target`` as ranks 0 and 1 of a gloo group; each writes rank{r}.json, returned in rank order."""
    reports = tmp_path / "reports"
    reports.mkdir()
    mp.spawn(target, args=(2, _free_port(), str(data), str(tmp_path / "run"), str(reports)), nprocs=2)
    return [json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1)]


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
