"""The command line: demo, train, generate; usage errors (exit 2) and one-line runtime errors (exit 1)."""
import json
import shutil
import subprocess
import sys

import pytest

from nptransformer.backend import cupy_available
from nptransformer.cli import main
from nptransformer.train import Trainer

TINY = ["--task", "copy", "--d-model", "16", "--heads", "2", "--layers", "1", "--ff", "32", "--batch-size", "8",
        "--warmup", "10", "--eval-every", "30", "--eval-examples", "10", "--beam-size", "2", "--dropout", "0.1",
        "--no-progress"]


def test_demo_runs_and_gradchecks(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "gradcheck : True" in out
    assert "times 0.5 everywhere" in out  # the broken Function is caught and explained


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "nptransformer", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


@pytest.mark.parametrize("command, expected", [
    ([], ["train", "generate", "demo"]),
    (["train"], ["--task", "--steps", "--seed", "--resume", "--text", "--device", "--out"]),
    (["generate"], ["--checkpoint", "--prompt", "--beam-size", "--temperature", "--top-k", "--top-p"]),
    (["demo"], ["--seed"]),
])
def test_every_command_has_help(capsys, command, expected):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in expected)


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "poetry"], "invalid choice: 'poetry'"),
    (["train", "--epochs", "3"], "unrecognized arguments: --epochs 3"),
    (["train", "--steps", "0"], "expected an integer >= 1"),
    (["train", "--task", "lm"], "task 'lm' needs a text file"),
    (["train", "--d-model", "10", "--heads", "4"], "divisible by nhead"),
    (["train", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["train", "--resume", "runs/x", "--task", "copy", "--lr", "0.1"], "drop --task, --lr"),
    (["generate", "--prompt", "x"], "the following arguments are required: --checkpoint"),
    (["generate", "--checkpoint", "d", "--prompt", "x", "--beam-size", "2", "--temperature", "0.5"],
     "--beam-size (beam search) cannot go with --temperature"),
    (["generate", "--checkpoint", "d", "--prompt", "x", "--top-p", "1.5"], "expected a number in (0, 1]"),
])
def test_command_line_mistakes_get_a_usage_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: nptransformer") and message in err and "Traceback" not in err


def _runtime_error(capsys, argv) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nptransformer: error: "), captured.err
    return lines[0]


def test_missing_or_empty_text_files_get_one_line(capsys, tmp_path):
    line = _runtime_error(capsys, ["train", "--task", "lm", "--text", str(tmp_path / "none.txt"), "--out", str(tmp_path / "r")])
    assert "none.txt' does not exist" in line
    (tmp_path / "empty.txt").write_text("   \n")
    line = _runtime_error(capsys, ["train", "--task", "lm", "--text", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "r")])
    assert "is empty" in line


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 60-step copy run made through the command line."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--steps", "60", "--out", str(out)]) == 0
    return out


def test_train_writes_the_run_and_prints_examples(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out examples (beam search, beam size 2):" in printed and "exact match:" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"exact_match", "losses", "steps", "seconds"} <= set(metrics) and len(metrics["losses"]) == 30
    assert (out / "loss.png").exists() and (out / "attention.png").exists()


def test_resume_through_the_command_line_is_bit_for_bit(tmp_path, tiny_run):
    assert main(["train", *TINY, "--steps", "120", "--out", str(tmp_path / "straight")]) == 0
    shutil.copytree(tiny_run, tmp_path / "resumed")
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--steps", "120", "--no-progress"]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert len(resumed["losses"]) == 120 and resumed["losses"] == straight["losses"]


def test_generate_prints_the_translation(capsys, tiny_run):
    assert main(["generate", "--checkpoint", str(tiny_run), "--prompt", "abc"]) == 0
    beam = capsys.readouterr().out
    assert main(["generate", "--checkpoint", str(tiny_run), "--prompt", "abc", "--temperature", "0.5", "--top-k", "3",
                 "--seed", "1"]) == 0
    sampled = capsys.readouterr().out
    assert beam.endswith("\n") and sampled.endswith("\n") and len(beam.splitlines()) == 1


def test_damaged_checkpoints_get_one_line_and_exit_1(capsys, tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoint.json").write_text('{"format": "nptransformer-checkpoint", "checkpoint": "checkpoints/gone"}')
    assert "which does not exist" in _runtime_error(capsys, ["generate", "--checkpoint", str(run), "--prompt", "ab"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    assert "neither checkpoint.json" in _runtime_error(capsys, ["generate", "--checkpoint", str(foreign), "--prompt", "ab"])


def test_a_truncated_checkpoint_fails_without_a_traceback_in_a_real_process(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    pointer = json.loads((run / "checkpoint.json").read_text())
    weights = run / pointer["checkpoint"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = subprocess.run([sys.executable, "-m", "nptransformer", "generate", "--checkpoint", str(run), "--prompt", "ab"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "model.safetensors" in result.stderr
    assert result.stderr.startswith("nptransformer: error: cannot load")


def test_a_nan_loss_stops_training_with_the_step_and_the_cause(capsys, tmp_path):
    line = _runtime_error(capsys, ["train", *TINY, "--lr", "1e30", "--steps", "20", "--out", str(tmp_path / "r")])
    assert "training stopped at step 2: the loss is nan" in line and "learning rate is too high" in line


@pytest.mark.skipif(cupy_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(capsys, tmp_path):
    line = _runtime_error(capsys, ["train", *TINY, "--device", "cuda", "--out", str(tmp_path / "r")])
    assert "device 'cuda' is not usable here" in line


def test_ctrl_c_says_where_the_last_checkpoint_is(capsys, tmp_path, monkeypatch):
    real_step = Trainer._train_step

    def interrupted_at_35(self):
        if self.step == 35:
            raise KeyboardInterrupt
        real_step(self)

    monkeypatch.setattr(Trainer, "_train_step", interrupted_at_35)
    assert main(["train", *TINY, "--steps", "60", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 35" in err and "last checkpoint (step 30)" in err
    assert f"nptransformer train --resume {tmp_path / 'r'}" in err


def test_without_threadpoolctl_training_runs_and_says_how_to_limit_threads(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # as if it were not installed
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", *TINY, "--steps", "3", "--threads", "2", "--out", str(tmp_path / "r")]) == 0
    assert "OPENBLAS_NUM_THREADS=1" in capsys.readouterr().err
