"""segzoo bench and the yardstick: they run, report every figure, and compare like with like.

No timing assertions: these machines are shared, only the presence and sanity of the figures is tested.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch

import segzoo
from segzoo.cli import main
from segzoo.core.accel import GemmConv2d
from segzoo.studies import bench

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"model", "mode", "device", "dtype", "input", "batch_size", "images_per_s", "ms_median", "ms_p25", "ms_p75",
        "first_iter_s", "gflops_per_image", "achieved_gflops", "peak_memory_mib", "matmul_peak_gflops",
        "fraction_of_matmul_peak", "device_peak_tflops", "fraction_of_device_peak", "loadavg", "torch_version"}


@pytest.fixture(scope="module")
def yardstick():
    spec = importlib.util.spec_from_file_location("yardstick", ROOT / "bench" / "yardstick.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["yardstick"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("yardstick", None)


def tiny_vgg(num_classes: int = 5) -> torch.nn.Module:
    return segzoo.create_model("vgg16-fcn8s", num_classes=num_classes, backbone_kwargs={"fc_channels": 16})


def test_cli_bench_prints_table_and_json(capsys, tmp_path):
    out = tmp_path / "r.json"
    code = main(["bench", "timm-resnet18-fcn8s", "--input", "3x64x64", "--warmup", "1", "--iters", "2",
                 "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    for label in ("images/s", "ms/iteration", "peak memory", "GFLOPs/image", "achieved GFLOP/s", "matmul peak"):
        assert label in text
    result = json.loads(out.read_text())
    assert KEYS <= set(result)
    assert result["model"] == "timm-resnet18-fcn8s" and result["input"] == [3, 64, 64]
    for key in ("images_per_s", "ms_median", "gflops_per_image", "achieved_gflops", "matmul_peak_gflops",
                "fraction_of_matmul_peak"):
        assert result[key] > 0, key
    assert result["ms_p25"] <= result["ms_median"] <= result["ms_p75"]
    assert result["device_peak_tflops"] is None  # CPU: the peak is the matmul probe's
    assert json.loads(text[text.index("{"):]) == result  # the printed JSON is the file's


def test_train_mode_counts_backward_and_updates_weights():
    model = tiny_vgg()
    before = model.head.score_fr.weight.detach().clone()
    infer = bench.benchmark(model, (3, 32, 32), mode="infer", warmup=1, iters=1, measure_peak=False)
    train = bench.benchmark(model, (3, 32, 32), mode="train", warmup=1, iters=1, measure_peak=False,
                            channels_last=False)
    assert train.gflops_per_image == pytest.approx(3 * infer.gflops_per_image)
    assert not torch.equal(model.head.score_fr.weight.detach(), before)  # an optimiser step ran
    assert train.fraction_of_matmul_peak is None and train.matmul_peak_gflops is None


def test_low_precision_inference_is_timed_beside_fp32_and_checked_against_it():
    r = bench.benchmark(tiny_vgg(), (3, 32, 32), dtype="bf16", warmup=1, iters=3, measure_peak=False)
    assert 0.0 <= r.agreement_vs_fp32 <= 1.0
    assert r.fp32_ms_median > 0 and r.speedup_vs_fp32 > 0 and r.channels_last
    assert "fp32's throughput" in dict(r.rows())["vs fp32"]
    if not bench.cpu_has_native_bf16():
        assert any("no native bf16" in n for n in r.notes)


def test_bf16_training_is_timed_beside_an_fp32_step_on_its_own_copy_of_the_model():
    model = tiny_vgg()
    before = model.head.score_fr.weight.detach().clone()
    r = bench.benchmark(model, (3, 32, 32), mode="train", dtype="bf16", warmup=1, iters=2, measure_peak=False)
    assert r.reference == "fp32" and r.fp32_ms_median is not None and r.speedup_vs_fp32 is not None
    assert r.agreement_vs_fp32 is None and r.payback_steps is None  # no argmax check in training; nothing compiled
    assert "fp32's throughput" in dict(r.rows())["vs fp32"]
    assert not torch.equal(model.head.score_fr.weight.detach(), before)  # the timed model itself trained


def test_compiled_training_is_timed_beside_the_eager_step_and_says_when_it_pays_back(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)  # inductor takes minutes on 2 cores
    r = bench.benchmark(tiny_vgg(), (3, 32, 32), mode="train", compile=True, warmup=1, iters=3, measure_peak=False)
    assert len(compiled) == 1 and r.compiled and r.reference == "eager" and r.compile_s is not None
    rows = dict(r.rows())
    assert "vs eager" in rows
    assert (r.payback_steps is not None and "compile pays back" in rows) or any("never pays back" in n for n in r.notes)


def test_low_precision_on_cpu_is_compared_with_the_fp32_peak_in_the_same_run():
    r = bench.benchmark(tiny_vgg(), (3, 32, 32), dtype="bf16", warmup=1, iters=1)
    assert r.matmul_peak_gflops > 0 and r.fp32_matmul_peak_gflops > 0
    slower = r.matmul_peak_gflops / r.fp32_matmul_peak_gflops < 1.2
    assert any("cannot beat fp32" in n for n in r.notes) is (slower and bench.cpu_has_native_bf16())
    assert "fp32 matmul peak" in dict(r.rows())


def test_the_models_own_gemm_path_is_timed_unless_turned_off(monkeypatch):
    calls = []
    real = GemmConv2d._gemm
    monkeypatch.setattr(GemmConv2d, "_gemm", lambda self, *a: calls.append(self) or real(self, *a))
    on = bench.benchmark(tiny_vgg(), (3, 32, 32), warmup=1, iters=1, measure_peak=False)
    assert on.gemm and calls
    calls.clear()
    off = bench.benchmark(tiny_vgg(), (3, 32, 32), warmup=1, iters=1, measure_peak=False, gemm=False)
    assert not off.gemm and calls == []


@pytest.mark.parametrize("argv, message", [
    (["--dtype", "fp16", "--mode", "train"], "fp16 training on CPU"),
    (["--iters", "0"], "--iters must be an integer from 1 to 100000"),
])
def test_bad_options_exit_2_with_the_fix(capsys, argv, message):
    assert main(["bench", "alexnet-fcn8s", "--input", "3x32x32", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_user_error(capsys):
    assert main(["bench", "alexnet-fcn8s", "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_cuda_peak_table_prefers_the_specific_name():
    assert bench.cuda_bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.cuda_bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.cuda_bf16_peak_tflops("NVIDIA H200") == 989.0
    assert bench.cuda_bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.cuda_bf16_peak_tflops("Some Future GPU") is None


def test_peak_memory_sees_a_temporary_allocation():
    with bench.peak_memory(torch.device("cpu")) as mem:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched, then freed
        del x
    if mem["peak_mib"] is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert 60 <= mem["peak_mib"] < 1024


def test_matmul_peak_is_positive():
    assert bench.measure_matmul_peak(torch.float32, n=128, reps=1) > 0


@pytest.mark.parametrize("geometry, size", [("modern", (64, 64)), ("modern", (50, 77)), ("caffe", (64, 64)),
                                            ("caffe", (50, 77))])
def test_textbook_net_computes_what_segzoo_computes(yardstick, geometry, size):
    torch.manual_seed(0)
    model = yardstick.segzoo_model(geometry, num_classes=5, fc_channels=16).eval()
    with torch.no_grad():  # every weight random, skips and upsampling included, so nothing is trivially equal
        for p in model.parameters():
            p.normal_(0, 0.05)
    textbook = yardstick.load_segzoo_weights(yardstick.TextbookFCN8s(5, geometry, fc_channels=16), model).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, theirs = model(x), textbook(x)
    assert theirs.shape == ours.shape == (2, 5, *size)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


def test_textbook_caffe_net_gives_the_input_size(yardstick):
    net = yardstick.TextbookFCN8s(3, "caffe", fc_channels=8).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 80)).shape == (1, 3, 64, 80)


def test_yardstick_compare_reports_ratios(yardstick, capsys):
    res = yardstick.compare("train", "modern", (3, 32, 32), 1, ["segzoo"], reps=2, warmup=1, num_classes=3,
                            fc_channels=8, memory=True)
    yardstick.print_result(res)
    rows = {r["name"]: r for r in res["rows"]}
    assert set(rows) == {"yardstick", "segzoo"}
    assert rows["yardstick"]["ratio_vs_yardstick"] == 1.0
    assert rows["segzoo"]["ratio_vs_yardstick"] > 0 and rows["segzoo"]["fraction_of_matmul_peak"] > 0
    assert "ratio vs yardstick" in capsys.readouterr().out


@pytest.mark.parametrize("workers", [0, 1])
def test_cli_bench_times_the_loader_beside_the_model(capsys, tmp_path, demo_data, workers):
    out = tmp_path / "r.json"
    code = main(["bench", "alexnet-fcn8s", "--input", "3x32x32", "--warmup", "1", "--iters", "1", "--no-peak",
                 "--batch-size", "2", "--data", str(demo_data), "--workers", str(workers), "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["loader_images_per_s"] > 0 and result["loader_workers"] == workers
    ratio = result["loader_images_per_s"] / result["images_per_s"]
    assert f"({workers} workers), {ratio:.1f}x the model's" in capsys.readouterr().out


def test_loader_throughput_counts_the_timed_batches_across_epochs(demo_data, monkeypatch):
    clock = iter([10.0, 12.0])  # the first batch ends at 10 s, the last timed one at 12 s
    monkeypatch.setattr(bench.timing, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    # 8 training images in batches of 3 (3, 3, 2 an epoch); the first batch is not timed, so ten timed
    # batches are 3+2, 3+3+2, 3+3+2 and 3+3 images, over four epochs
    rate = bench.loader_throughput(demo_data, crop=16, batch_size=3, batches=10)
    assert rate == pytest.approx(27 / 2.0)


def test_loader_throughput_takes_the_models_classes_where_the_data_names_none(tmp_path):
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "a.png")
    Image.new("L", (40, 30), 3).save(tmp_path / "masks" / "a.png")  # label 3: fine for 4 classes
    assert bench.loader_throughput(tmp_path, crop=16, batch_size=1, batches=2, split="all", num_classes=4) > 0
    # neither: the classes the masks show (0-3), with a note
    assert bench.loader_throughput(tmp_path, crop=16, batch_size=1, batches=2, split="all") > 0


def _study(folder: Path, key: str, value, ious: list[float]) -> Path:
    """A study folder as segzoo ablate leaves it: per seed a result.json and the config.json it trained with."""
    for seed, iu in enumerate(ious):
        run = folder / "vgg16-fcn8s" / f"seed-{seed}"
        run.mkdir(parents=True)
        result = {"variant": "vgg16-fcn8s", "backbone": "vgg16", "head": "fcn8s", "staged": False, "seed": seed,
                  "epoch": 8, "mean_iu": iu, "pixel_acc": 0.9, "mean_acc": 0.8, "fw_iu": 0.85,
                  "per_class_iu": {"background": 0.95, "disc": 2 * iu - 0.95},
                  "history": [{"epoch": 8, "train_loss": 0.1, "mean_iu": iu}]}
        (run / "result.json").write_text(json.dumps(result))
        (run / "config.json").write_text(json.dumps({"model": "vgg16-fcn8s", key: value, "epochs": 8}))
    return folder


def test_combine_studies_pairs_runs_by_seed_under_the_setting_each_recorded(tmp_path, capsys, monkeypatch):
    # bench/combine_studies.py: what docs/performance.md (bf16 vs fp32) and docs/training-speed.md (--lr-find) ran
    spec = importlib.util.spec_from_file_location("combine_studies", ROOT / "bench" / "combine_studies.py")
    combine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(combine)
    fp32 = _study(tmp_path / "fp32", "amp", False, [0.70, 0.80, 0.60])
    bf16 = _study(tmp_path / "bf16", "amp", True, [0.72, 0.83, 0.61])
    out = tmp_path / "combined"
    monkeypatch.setattr(sys, "argv", ["combine_studies.py", str(out), "amp", str(fp32), str(bf16)])
    combine.main()
    report = json.loads((out / "results.json").read_text())["last_epoch"]
    assert [s["variant"] for s in report] == ["vgg16-fcn8s amp=False", "vgg16-fcn8s amp=True"]
    assert report[0]["delta"] is None
    assert report[1]["delta"]["mean"] == pytest.approx(0.02)  # (0.02 + 0.03 + 0.01) / 3, paired by seed
    assert (out / "results.png").stat().st_size > 0 and "amp=True" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists"):  # never over an earlier report
        combine.main()
