"""The segzoo command as a user runs it: exit codes, messages, and files; hostile input as one line, exit 2."""

import hashlib
import os
import pickle
import shutil
import signal

import pytest
import torch

import segzoo
from segzoo.cli import main
from tests.conftest import TINY_TRAIN, run_cli


def test_build_prints_the_summary_and_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "net.pt"
    r = run_cli("build", "alexnet-fcn8s", "--input", "3x67x45", "--num-classes", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for text in ("parameters", "trainable", "32 + 16 + 8", "1 x 3 x 67 x 45", "1 x 4 x 67 x 45", "GFLOPs"):
        assert text in r.stdout
    model = segzoo.load_model(out)
    assert model.num_classes == 4 and model.recipe.name == "alexnet-fcn8s"
    assert model(torch.randn(1, 3, 67, 45)).shape == (1, 4, 67, 45)


def test_unknown_model_exits_2_with_suggestions_and_no_traceback():
    r = run_cli("build", "vgg16-fcn9s")
    assert r.returncode == 2
    assert "Did you mean: vgg16-fcn8s" in r.stderr and "Traceback" not in r.stderr


def test_bad_input_size_exits_2():
    r = run_cli("build", "alexnet-fcn32s", "--input", "huge")
    assert r.returncode == 2 and "CxHxW" in r.stderr


def test_list_names_every_part_and_its_distribution():
    r = run_cli("list")
    assert r.returncode == 0
    for text in ("vgg16", "alexnet", "timm-resnet18", "fcn4s", "vgg16-fcn8s", "segzoo 0.1.0", "recipes"):
        assert text in r.stdout
    r = run_cli("list", "alexnet-*")
    names = r.stdout.split()
    assert names == sorted(names) and all(n.startswith("alexnet-") for n in names)
    assert {"alexnet-fcn32s", "alexnet-fcn8s", "alexnet-unet"} <= set(names) and "vgg16-fcn8s" not in names


def test_build_takes_backbone_and_head_options(capsys):
    assert main(["build", "alexnet-fcn32s", "--input", "3x64x64", "--backbone-opt", "fc_channels=24",
                 "--head-opt", "learnable_upsampling=false"]) == 0
    out = capsys.readouterr().out
    alexnet = segzoo.create_model("alexnet-fcn32s", backbone_kwargs={"fc_channels": 24},
                                  head_kwargs={"learnable_upsampling": False})
    trainable = sum(p.numel() for p in alexnet.parameters() if p.requires_grad)
    assert f"{trainable:,} trainable" in out
    assert main(["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels"]) == 2
    assert "--backbone-opt 'fc_channels' must be KEY=VALUE" in capsys.readouterr().err


# -- hostile input: every bad value is one line and exit 2, never a traceback, never a lost file ---------------

TINY = TINY_TRAIN


def digest(folder) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes: what a refusal must leave exactly as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, argv: list[str], *expect: str, code: int = 2) -> str:
    """Run the CLI in-process; assert the exit code, one line on stderr naming ``expect``, and no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, (argv, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("segzoo"), err
    for text in expect:
        assert text in lines[0], (text, lines[0])
    return lines[0]


# (command line, text the one line must hold); {data} and {out} are filled in per test
BAD_NUMBERS = [
    (["train", *TINY, "--lr", "nan"], "--lr must be a finite number > 0"),
    (["train", *TINY, "--lr", "-1"], "--lr must be a finite number > 0"),
    (["train", *TINY, "--lr", "abc"], "--lr"),
    (["train", *TINY, "--momentum", "-1"], "--momentum must be a finite number >= 0 and < 1"),
    (["train", *TINY, "--weight-decay", "inf"], "--weight-decay"),
    (["train", *TINY, "--seed", "-1"], "--seed must be an integer from 0"),
    (["train", *TINY, "--scale", "nan,nan"], "--scale must be LOW,HIGH"),
    (["train", *TINY, "--scale", "1000,1000"], "--scale must be LOW,HIGH"),
    (["train", *TINY, "--scale", "2,1"], "--scale must be LOW,HIGH"),
    (["train", *TINY, "--scale", "1"], "--scale must be LOW,HIGH"),
    (["train", *TINY, "--input-size", "0"], "--input-size must be an integer from 16 to 8192"),
    (["train", *TINY, "--input-size", "-5"], "--input-size must be an integer from 16 to 8192"),
    (["train", *TINY, "--input-size", "100000"], "--input-size must be an integer from 16 to 8192"),
    (["train", *TINY, "--num-classes", "0"], "--num-classes must be an integer from 1 to 255"),
    (["train", *TINY, "--num-classes", "100000"], "--num-classes must be an integer from 1 to 255"),
    (["train", *TINY, "--fc-channels", "0"], "--fc-channels must be an integer from 1 to 65536"),
    (["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels=abc"], "fc_channels"),
    (["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels=-3"], "fc_channels"),
    (["train", *TINY, "--backbone-opt", "dropout=2"], "dropout"),
    (["train", *TINY, "--backbone-opt", "fc_channels"], "KEY=VALUE"),
    (["train", *TINY, "--backbone-opt", "=1"], "KEY=VALUE"),
    (["train", *TINY, "--epochs", "0"], "--epochs must be an integer from 1 to"),
    (["train", *TINY, "--batch-size", "0"], "--batch-size must be an integer from 1 to"),
    (["train", *TINY, "--workers", "-1"], "--workers must be an integer from 0 to"),
    (["train", *TINY, "--eval-every", "0"], "--eval-every must be an integer from 1 to"),
    (["train", *TINY, "--save-every-steps", "-1"], "--save-every-steps"),
    (["train", *TINY, "--save-every-epochs", "-1"], "--save-every-epochs"),
    (["train", *TINY, "--class-weights", "nan,1,1,1,1,1"], "--class-weights"),
    (["eval", "--batch-size", "0"], "--batch-size must be an integer from 1 to 4096"),
    (["eval", "--workers", "-1"], "--workers must be an integer from 0 to"),
    (["bench", "alexnet-fcn32s", "--input", "1x64x64"], "3-channel"),
    (["bench", "alexnet-fcn32s", "--input", "4x64x64"], "3-channel"),
    (["bench", "alexnet-fcn32s", "--input", "3x0x64"], "CxHxW"),
    (["bench", "alexnet-fcn32s", "--batch-size", "0"], "--batch-size must be an integer from 1 to 4096"),
    (["bench", "alexnet-fcn32s", "--iters", "0"], "--iters must be an integer from 1 to"),
    (["bench", "alexnet-fcn32s", "--warmup", "0"], "--warmup must be an integer from 1 to"),
    (["bench", "alexnet-fcn32s", "--threads", "0"], "--threads must be an integer from 1 to"),
    (["bench", "alexnet-fcn32s", "--workers", "-2"], "--workers must be an integer from 0 to"),
    (["bench", "alexnet-fcn32s", "--peak-tflops", "nan"], "--peak-tflops must be a finite number > 0"),
    (["bench", "alexnet-fcn32s", "--num-classes", "100000"], "--num-classes must be an integer from 1 to 255"),
    (["build", "alexnet-fcn32s", "--input", "1x64x64"], "3-channel"),
    (["build", "alexnet-fcn32s", "--input", "4x64x64"], "3-channel"),
    (["build", "alexnet-fcn32s", "--input", "3x64x99999"], "sides up to 16384"),
    (["build", "alexnet-fcn32s", "--num-classes", "0"], "--num-classes must be an integer from 1 to 255"),
    (["build", "alexnet-fcn32s", "--num-classes", "100000"], "--num-classes must be an integer from 1 to 255"),
    (["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels=0"], "fc_channels"),
    (["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels=[1"], "cannot read the value"),
    (["data", "demo", "--out", "{out}", "--train", "-1"], "--train must be an integer from 1 to"),
    (["data", "demo", "--out", "{out}", "--val", "-1"], "--val must be an integer from 0 to"),
    (["data", "demo", "--out", "{out}", "--size", "0"], "--size must be an integer from 16 to"),
    (["data", "demo", "--out", "{out}", "--seed", "-1"], "--seed must be an integer from 0 to"),
    (["data", "check", "{data}", "--num-classes", "0"], "--num-classes must be an integer from 1 to 255"),
    (["check-plugin", "alexnet", "--num-classes", "0"], "--num-classes must be an integer from 1 to 255"),
    (["convert", "a.pth", "{out}", "--from", "torchfcn", "--model", "vgg16-fcn32s", "--num-classes", "0"],
     "--num-classes must be an integer from 1 to 255"),
]


@pytest.mark.parametrize("argv,expect", BAD_NUMBERS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_NUMBERS])
def test_every_numeric_option_refuses_a_bad_value_in_one_line(argv, expect, demo_data, tmp_path, capsys):
    """Checked at the edge: nothing is built, trained or written, and the line names the option and its range."""
    out = tmp_path / "out"
    argv = [a.format(data=demo_data, out=out) for a in argv]
    if argv[0] == "train":
        argv += ["--data", str(demo_data), "--out", str(out)]
    if argv[0] == "eval":
        argv += ["--checkpoint", str(tmp_path / "x.pt"), "--data", str(demo_data)]
    before = digest(demo_data)
    refused(capsys, argv, expect)
    assert not out.exists()  # no run folder, demo or checkpoint left behind
    assert digest(demo_data) == before


# -- checkpoints that are empty, cut short, pickled code or tampered with, on every command that reads one ----
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "net.pt"
    assert main(["build", "alexnet-fcn32s", "--num-classes", "6", "--backbone-opt", "fc_channels=32", "--input",
                 "3x64x64", "--out", str(path)]) == 0
    return path


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def bad_files(folder, model_file) -> dict[str, object]:
    """Damaged copies of a good checkpoint, by what is wrong with them."""
    import torch

    folder.mkdir(exist_ok=True)
    good = torch.load(model_file, weights_only=True)
    raw = model_file.read_bytes()
    made = {"empty": b"", "truncated": raw[: len(raw) // 3], "pickled code": pickle.dumps({"x": Payload()}, 2)}
    paths = {}
    for name, data in made.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.pt"
        paths[name].write_bytes(data)
    tampered = {
        "recipe a string": {**good, "recipe": "vgg16-fcn8s"},
        "class_names an int": {**good, "recipe": {**good["recipe"], "class_names": 5}},
        "std of 0": {**good, "recipe": {**good["recipe"], "normalization": {
            **good["recipe"]["normalization"], "std": [0.0, 0.2, 0.2]}}},
    }
    for name, obj in tampered.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.pt"
        torch.save(obj, paths[name])
    folder.joinpath("a_folder.pt").mkdir()
    paths["a folder"] = folder / "a_folder.pt"
    return paths


READERS = {
    "eval": lambda f, d, o: ["eval", "--checkpoint", f, "--data", d, "--json", o],
    "predict": lambda f, d, o: ["predict", "--checkpoint", f, f"{d}/JPEGImages/val_00000.jpg", "--out", o],
    "bench": lambda f, d, o: ["bench", f, "--input", "3x64x64", "--iters", "1", "--warmup", "1", "--no-peak"],
    "build --weights": lambda f, d, o: ["build", "alexnet-fcn32s", "--num-classes", "6", "--backbone-opt",
                                        "fc_channels=32", "--weights", f, "--input", "3x64x64"],
    "build --backbone-weights": lambda f, d, o: ["build", "alexnet-fcn32s", "--backbone-weights", f, "--input",
                                                 "3x64x64"],
    "convert": lambda f, d, o: ["convert", f, o, "--from", "torchfcn", "--model", "vgg16-fcn32s"],
    "train --resume": lambda f, d, o: ["train", "--resume", f, "--out", o],
    "train --init-from": lambda f, d, o: ["train", *TINY, "--data", d, "--init-from", f, "--out", o],
}
# which damage each reader meets: state-dict readers never look at a recipe
DAMAGE = {"empty": "is empty", "truncated": "corrupt", "pickled code": "pickled Python code",
          "a folder": "regular file", "recipe a string": "recipe", "class_names an int": "class_names",
          "std of 0": "std"}
RECIPE_READERS = ("eval", "predict", "bench")


def test_damaged_checkpoints_are_one_line_on_every_command_that_reads_one(model_file, demo_data, tmp_path,
                                                                          capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the payload would write, were it ever run
    files = bad_files(tmp_path / "bad", model_file)
    before = digest(tmp_path / "bad")
    cases = 0
    for command, make in READERS.items():
        for damage, expect in DAMAGE.items():
            if damage in ("recipe a string", "class_names an int", "std of 0") and command not in RECIPE_READERS:
                continue
            out = tmp_path / f"out-{cases}"
            line = refused(capsys, make(str(files[damage]), str(demo_data), str(out)), expect)
            assert str(files[damage]) in line or damage in ("recipe a string", "class_names an int", "std of 0")
            assert not out.exists()
            cases += 1
    assert cases == 8 * 4 + 3 * 3
    assert not (tmp_path / "pwned.txt").exists()  # the pickle never ran
    assert digest(tmp_path / "bad") == before


def test_the_pickled_code_refusal_says_what_it_is_and_what_to_do(model_file, tmp_path, capsys):
    files = bad_files(tmp_path / "bad", model_file)
    line = refused(capsys, ["eval", "--checkpoint", str(files["pickled code"]), "--data", str(tmp_path)])
    assert "segzoo never runs" in line and "torch.load(weights_only=False)" in line and line.endswith("that file")


def test_tampered_training_checkpoints_are_refused_before_resuming(trained_run, tmp_path, capsys):
    import torch

    good = torch.load(trained_run / "last.pt", weights_only=True)
    for key, value in (("rng", None), ("config", None), ("config", "epochs: 3"), ("epoch", "2"),
                       ("history", {"a": 1})):
        bad = {k: v for k, v in good.items() if k != key}
        if value is not None:
            bad[key] = value
        path = tmp_path / f"{key}.pt"
        torch.save(bad, path)
        refused(capsys, ["train", "--resume", str(path), "--out", str(tmp_path / "new")], f"'{key}'")
        assert not (tmp_path / "new").exists()


@pytest.fixture
def trained_run(tiny_run):
    return tiny_run


# -- files: never replace what segzoo did not write ------------------------------------------------------------
def test_build_and_convert_refuse_an_existing_file_unless_forced(model_file, tmp_path, capsys):
    target = tmp_path / "mine.pt"
    target.write_bytes(b"precious")
    refused(capsys, ["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels=8", "--input", "3x64x64", "--out",
                     str(target)], "exists", "--force")
    refused(capsys, ["convert", str(model_file), str(target), "--from", "torchfcn", "--model", "vgg16-fcn32s"],
            "exists", "--force")
    assert target.read_bytes() == b"precious"
    refused(capsys, ["build", "alexnet-fcn32s", "--input", "3x64x64", "--out", str(tmp_path)], "is a folder")
    assert main(["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels=8", "--input", "3x64x64", "--out",
                 str(target), "--force"]) == 0
    assert segzoo.load_model(target).recipe.name == "alexnet-fcn32s"


def test_os_errors_on_output_paths_are_one_line_naming_the_path(trained_run, demo_data, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = refused(capsys, ["eval", "--checkpoint", str(trained_run / "best.pt"), "--data", str(demo_data),
                            "--json", str(a_file / "m.json")], "cannot use", "not a folder")
    assert str(a_file) in line
    refused(capsys, ["bench", "alexnet-fcn32s", "--input", "3x64x64", "--iters", "1", "--warmup", "1", "--no-peak",
                     "--json", str(tmp_path)], str(tmp_path), "folder")
    refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(a_file / "run")], str(a_file))
    assert a_file.read_text() == "x"


# -- the command line itself -------------------------------------------------------------------------------------
def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import segzoo.cli.listing as listing

    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(listing, "run", broken)
    line = refused(capsys, ["list"], "unexpected RuntimeError: boom second line", "--debug", code=1)
    assert "SEGZOO_DEBUG=1" in line
    assert main(["--debug", "list"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["list", "--debug"]) == 1  # after the command too, as the hint is read
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("SEGZOO_DEBUG", "1")
    assert main(["build", "vgg16-fcn9s"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("segzoo: error: unknown model")


def test_a_huge_name_is_cut_and_argparse_errors_are_one_line(capsys):
    line = refused(capsys, ["build", "x" * 100_000])
    assert len(line) < 400 and "100,000 characters" in line
    refused(capsys, ["train", "--epochs", "two"], "--epochs must be an integer from 1 to", "got 'two'",
            "segzoo train --help")
    refused(capsys, ["nosuchcommand"], "invalid choice")


def test_check_plugin_of_a_module_or_name_that_is_no_plugin_fails(capsys):
    refused(capsys, ["check-plugin", "os"], "no segzoo plugin")
    refused(capsys, ["check-plugin", ""], "needs a plugin")
    refused(capsys, ["check-plugin", "a..b"], "no plugin distribution")


def test_disabling_a_plugin_that_is_not_installed_warns(capsys):
    assert main(["-p", "no:typo", "list", "alexnet-fcn32s"]) == 0
    err = capsys.readouterr().err
    assert "warning: -p no:typo names no installed plugin" in err and "alexnet" in err
    assert main(["-p", "no:timm", "list", "alexnet-fcn32s"]) == 0
    assert capsys.readouterr().err == ""
    segzoo.get_registry(reload=True)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_registry_or_study_file_fails_at_once_instead_of_hanging(tmp_path, capsys, monkeypatch):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    monkeypatch.setenv("SEGZOO_REGISTRY", str(fifo))
    try:
        segzoo.get_registry(reload=True)  # reading the FIFO would block here forever
        assert main(["list", "alexnet-fcn32s"]) == 0 and main(["plugins"]) == 0
        out = capsys.readouterr().out
        assert "alexnet-fcn32s" in out and "recipes" in out and "not a regular file" in out
    finally:
        monkeypatch.delenv("SEGZOO_REGISTRY")
        segzoo.get_registry(reload=True)
    refused(capsys, ["ablate", str(fifo)], "not a regular file")


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigterm_is_handled_like_ctrl_c(monkeypatch, capsys):
    import segzoo.cli.listing as listing

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(listing, "run", terminated)
    assert main(["list"]) == 143
    assert capsys.readouterr().err.strip() == "segzoo: terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was


def test_messages_suggest_only_flags_the_command_has(trained_run, demo_data, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    line = refused(capsys, ["predict", "--checkpoint", str(trained_run / "best.pt"), str(bad), "--out",
                            str(tmp_path / "p")], "cannot read image", str(bad))
    assert "--skip-bad" not in line  # predict has no such flag
    empty = tmp_path / "voc"
    shutil.copytree(demo_data, empty)
    (empty / "ImageSets" / "Segmentation" / "train.txt").unlink()
    line = refused(capsys, ["bench", "alexnet-fcn32s", "--input", "3x64x64", "--iters", "1", "--warmup", "1",
                            "--no-peak", "--data", str(empty)], "train.txt does not exist", "splits here: ['val']")
    assert "--split" not in line  # nor has bench
    corrupt = shutil.copytree(demo_data, tmp_path / "corrupt")
    (corrupt / "JPEGImages" / "val_00001.jpg").write_bytes(b"")
    refused(capsys, ["eval", "--checkpoint", str(trained_run / "best.pt"), "--data", str(corrupt), "--json",
                     str(tmp_path / "e.json")], "val_00001.jpg", "--skip-bad")  # eval has it


# -- issue 21: nothing replaced, nothing silently wrong, nothing hangs ------------------------------------------

def test_no_command_replaces_its_own_input_or_a_file_it_did_not_write(model_file, demo_data, tmp_path, capsys):
    ckpt = tmp_path / "net.pt"
    shutil.copy(model_file, ckpt)
    mine = tmp_path / "mine.json"
    mine.write_text("precious")
    before = digest(tmp_path)
    refused(capsys, ["eval", "--checkpoint", str(ckpt), "--data", str(demo_data), "--json", str(ckpt)],
            "--json", "one of this command's inputs")
    refused(capsys, ["eval", "--checkpoint", str(ckpt), "--data", str(demo_data), "--json", str(ckpt), "--force"],
            "one of this command's inputs")
    refused(capsys, ["eval", "--checkpoint", str(ckpt), "--data", str(demo_data), "--json", str(mine)],
            "exists", "--force")
    refused(capsys, ["bench", str(ckpt), "--json", str(mine)], "--json", "exists", "--force")
    refused(capsys, ["bench", str(ckpt), "--json", str(ckpt), "--force"], "one of this command's inputs")
    refused(capsys, ["convert", str(ckpt), str(ckpt), "--from", "torchfcn", "--model", "vgg16-fcn32s", "--force"],
            "one of this command's inputs")
    os.symlink(ckpt, tmp_path / "link.pt")
    refused(capsys, ["convert", str(ckpt), str(tmp_path / "link.pt"), "--from", "torchfcn", "--model",
                     "vgg16-fcn32s", "--force"], "one of this command's inputs")
    (tmp_path / "link.pt").unlink()
    assert digest(tmp_path) == before


def test_predict_outputs_never_collide_and_a_second_predict_into_one_out_stops(model_file, tmp_path, capsys):
    from PIL import Image

    from segzoo.core.lock import RunLock

    images = tmp_path / "in"
    images.mkdir()
    for name in ("a.png", "a_overlay.png"):
        Image.new("RGB", (64, 64), (10, 20, 30)).save(images / name)
    out = tmp_path / "out"
    refused(capsys, ["predict", str(images), "--checkpoint", str(model_file), "--out", str(out), "--workers", "0"],
            "a.png", "a_overlay.png", "would both write")
    assert not out.exists()
    (images / "a_overlay.png").unlink()
    with RunLock(out):
        refused(capsys, ["predict", str(images), "--checkpoint", str(model_file), "--out", str(out), "--workers",
                         "0"], "in use by another segzoo run", f"pid {os.getpid()}")
        assert sorted(p.name for p in out.iterdir()) == [".segzoo.lock"]


@pytest.mark.parametrize("argv, expect", [
    (["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{out}", "--batch", "0"],
     "--batch must be an integer from 1"),
    (["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{out}", "--batch", "4"], "--batch runs tiles"),
    (["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{out}", "--overlap", "0.5"], "--overlap 0.5 blends"),
    (["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{out}", "--workers", "100000"],
     "--workers must be an integer from 0"),
    (["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{out}", "--tile", "0"],
     "--tile must be an integer from 1"),
    (["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{out}", "--tta", "scales=" + ",".join(["1"] * 5000)],
     "at most 64 scales"),
    (["predict", "{img}", "--checkpoint", "{ckpt}", "--out", "{out}", "--tta", "flip", "--tta",
      "scales=" + ",".join(["1"] * 40)], "80 views"),
    (["eval", "--checkpoint", "{ckpt}", "--data", "{data}", "--tile", "0"], "--tile must be an integer from 1"),
    (["eval", "--checkpoint", "{ckpt}", "--data", "{data}", "--overlap", "0.1"], "--overlap 0.1 blends"),
    (["eval", "--checkpoint", "{ckpt}", "--data", "{data}", "--workers", "100000"],
     "--workers must be an integer from 0"),
    (["ablate", "--seeds", "1000000000", "--out", "{out}"], "--seeds must be an integer from 1 to 1000"),
    (["train", *TINY, "--data", "{data}", "--out", "{out}", "--workers", "100000"],
     "--workers must be an integer from 0"),
    (["train", *TINY, "--data", "{data}", "--out", "{out}", "--class-weights", "0,0,0,0,0,0"],
     "at least one > 0"),
    (["train", *TINY, "--data", "{data}", "--out", "{out}", "--class-weights=-1,1,1,1,1,1"], ">= 0"),
])
def test_options_that_would_be_ignored_or_unbounded_are_refused(argv, expect, model_file, demo_data, tmp_path,
                                                                 capsys):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(img)
    out = tmp_path / "out"
    argv = [a.format(img=img, ckpt=model_file, out=out, data=demo_data) for a in argv]
    refused(capsys, argv, expect)
    assert not out.exists()


def test_config_values_are_type_checked_and_print_config_prints_only_valid_settings(tmp_path, capsys):
    for text, expect in (("flip: 'no'\n", "setting 'flip' must be true or false, got 'no'"),
                         ("epochs: two\n", "setting 'epochs' must be a whole number, got 'two'"),
                         ("scale: [1, a]\n", "setting 'scale' must be a list of 2 numbers"),
                         ("scale: [1]\n", "--scale must be LOW,HIGH"),
                         ("demo: {train: x}\n", "setting 'demo'"),
                         (b"epochs: \xff\xfe\n", "not UTF-8"),
                         ("? [1, 2]\n: 3\n", "config file")):
        cfg = tmp_path / "c.yaml"
        cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
        assert main(["train", "--config", str(cfg), "--print-config"]) == 2
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("segzoo")]
        assert len(errors) == 1 and expect in errors[0] and "Traceback" not in captured.err, captured.err
        assert "epochs:" not in captured.out  # nothing printed as if it were a valid config


def _fifo_guard():
    """Fail (rather than hang the suite) if a read blocks."""
    def hung(*_):
        raise AssertionError("a read blocked on a FIFO")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)


def test_every_file_read_refuses_a_fifo_at_once(model_file, demo_data, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    _fifo_guard()
    try:
        refused(capsys, ["train", "--config", str(fifo), "--print-config"], "not a regular file")
        refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(out), "--label-map", str(fifo)],
                "not a regular file")
        refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(out), "--normalization", str(fifo)],
                "not a regular file")
        refused(capsys, ["eval", "--checkpoint", str(model_file), "--data", str(demo_data), "--label-map",
                         str(fifo)], "not a regular file")
        from segzoo.data.io import read_image
        from segzoo.studies.ablate import read_result

        with pytest.raises(segzoo.SegzooError, match="not a regular file"):
            read_result(fifo)
        with pytest.raises(segzoo.SegzooError, match="not a regular file"):
            read_image(fifo)
    finally:
        signal.alarm(0)
    assert not out.exists()


def test_a_damaged_stats_file_result_or_label_map_is_one_line(demo_data, tmp_path, capsys):
    import json

    from segzoo.studies.ablate import read_result

    out = tmp_path / "out"
    stats = tmp_path / "stats.json"
    for content, expect in (({"format": "segzoo-stats"}, "'mean' and 'std'"),
                            ({"format": "segzoo-stats", "mean": [0, 0, 0], "std": [0, 1, 1]}, "every std > 0"),
                            ("[1, 2", "not valid JSON"), ('{"mean": NaN}', "not valid JSON")):
        stats.write_text(content if isinstance(content, str) else json.dumps(content))
        from segzoo.data.stats import FORMAT
        if isinstance(content, dict):
            stats.write_text(json.dumps({**content, "format": FORMAT}))
        refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(out), "--normalization", str(stats)],
                expect)
    result = tmp_path / "result.json"
    for content in ('{"variant": 1}', "[]", '{"variant": "a", "seed": 0, "mean_iu": "high"}', "\xff"):
        result.write_bytes(content.encode("latin-1"))
        with pytest.raises(segzoo.SegzooError, match="damaged|not valid JSON|not UTF-8|JSON list"):
            read_result(result)
    labels = tmp_path / "map.yaml"
    for content, expect in ((b"\xff: 1\n", "not UTF-8"), (b"? [1]\n: 2\n", "not valid YAML"),
                            (b"1: 300\n", "training id 300")):
        labels.write_bytes(content)
        refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(out), "--label-map", str(labels)],
                expect)
    assert not out.exists()


def test_ablate_never_replaces_the_users_own_files_in_out(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    refused(capsys, ["ablate", "--backbones", "alexnet", "--heads", "fcn32s", "--epochs", "1", "--out", str(out)],
            "holds files a segzoo study did not write", "results.md")
    assert digest(out) == {"results.md": hashlib.sha256(b"my notes").hexdigest()}


def test_a_float_tiff_with_nan_is_refused_by_predict_and_reported_by_data_check_and_stats(model_file, tmp_path,
                                                                                          capsys):
    import numpy as np
    import tifffile

    from segzoo.data.io import read_image

    img = np.ones((64, 64, 3), np.float32)
    img[5:9, 7:9] = np.nan
    img[20, 20] = np.inf
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, img)
    with pytest.raises(segzoo.SegzooError, match=r"holds 27 NaN or Inf values \(the first at row 5, column 7\)"):
        read_image(path)
    out = tmp_path / "out"
    refused(capsys, ["predict", str(path), "--checkpoint", str(model_file), "--out", str(out), "--workers", "0"],
            str(path), "NaN or Inf")
    assert not out.exists() or not any(p.name != ".segzoo.lock" for p in out.rglob("*"))
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    tifffile.imwrite(data / "images" / "a.tif", img)
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "masks" / "a.png")
    main(["data", "check", str(data), "--split", "all"])
    captured = capsys.readouterr()
    assert "NaN or Inf" in captured.out + captured.err
    refused(capsys, ["data", "stats", str(data), "--split", "all"], "NaN or Inf")
    assert sorted(p.name for p in data.iterdir()) == ["images", "masks"]


def test_tampered_optimizer_state_is_one_line_before_training(trained_run, tmp_path, capsys):
    import torch

    good = torch.load(trained_run / "last.pt", weights_only=True)
    bad = {**good, "optimizer": {**good["optimizer"], "param_groups": [{"params": [0, 1]}]}}
    path = tmp_path / "bad" / "last.pt"
    path.parent.mkdir()
    torch.save(bad, path)
    refused(capsys, ["train", "--resume", str(path), "--epochs", "2", "--out", str(tmp_path / "bad")],
            "its optimizer state does not fit this run")
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == ["config.json", "last.pt"] or not any(
        p.name.startswith("metrics") for p in (tmp_path / "bad").iterdir())


def test_a_full_disk_while_training_is_one_line_and_the_logs_never_run_ahead(demo_data, small_disk, capsys):
    out = small_disk / "run"
    line = refused(capsys, ["train", *TINY, "--data", str(demo_data), "--out", str(out)],
                   f"the disk mounted at {small_disk} is full", "free space there")
    assert "unexpected" not in line
    left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert not any(name.endswith(".tmp") for name in left), left  # no temporary file
    assert "metrics.jsonl" not in left and "metrics.csv" not in left  # logs never claim an epoch last.pt lacks
