"""The trainer: determinism, bit-for-bit resume, checkpoints that survive an interrupted save and
refuse damaged files, early stopping, non-finite losses, progress bars, the run's files, and the
language-model task. Every run here is tiny (a 1-layer model of width 16), so the file is fast."""
import io
import json
import os
import shutil
import sys

import numpy as np
import pytest

from nptransformer import nn, serialization
from nptransformer.backend import DeviceError, cupy_available
from nptransformer.data import DataError, seq2seq_batch
from nptransformer.serialization import CheckpointError
from nptransformer.train import (
    ConfigError,
    TrainConfig,
    Trainer,
    TrainingError,
    _PlainBar,
    generate,
    load_checkpoint,
    progress_bar,
    seq2seq_loss,
)

TEXT = "the quick brown fox jumps over the lazy dog. " * 40 + "pack my box with five dozen liquor jugs. " * 20


def tiny(**changes) -> TrainConfig:
    settings = dict(task="copy", d_model=16, nhead=2, num_layers=1, dim_feedforward=32, batch_size=8, warmup=10,
                    eval_every=30, eval_examples=20, beam_size=2, dropout=0.1)
    settings.update(changes)
    return TrainConfig(**settings)


def trainer(config, out, **kwargs) -> Trainer:
    return Trainer(config, out, progress=False, stream=io.StringIO(), **kwargs)


@pytest.fixture(scope="module")
def run_60(tmp_path_factory):
    """A finished 60-step run (checkpoints at steps 30 and 60), shared by the read-only tests."""
    out = tmp_path_factory.mktemp("run") / "copy"
    metrics = trainer(tiny(steps=60), out).train()
    return out, metrics


def test_the_run_is_a_function_of_its_seed(tmp_path):
    a = trainer(tiny(steps=12, eval_every=100), tmp_path / "a").train()
    b = trainer(tiny(steps=12, eval_every=100), tmp_path / "b").train()
    c = trainer(tiny(steps=12, eval_every=100, seed=1), tmp_path / "c").train()
    assert a["losses"] == b["losses"] and a["grad_norms"] == b["grad_norms"]
    assert a["losses"] != c["losses"]


def test_resume_continues_bit_for_bit(tmp_path, run_60):
    """120 steps in one go == 60 steps, a checkpoint, and a resumed run to 120 (dropout on, so the
    generators' states must come back too)."""
    straight = trainer(tiny(steps=120), tmp_path / "straight").train()
    first, first_metrics = tmp_path / "first", run_60[1]
    shutil.copytree(run_60[0], first)
    resumed_trainer = Trainer.resume(first, steps=120, progress=False, stream=io.StringIO())
    assert resumed_trainer.step == 60 and resumed_trainer.history["losses"] == first_metrics["losses"]
    resumed = resumed_trainer.train()
    assert len(resumed["losses"]) == 120
    assert resumed["losses"] == straight["losses"]
    assert resumed["grad_norms"] == straight["grad_norms"] and resumed["lrs"] == straight["lrs"]
    assert resumed["evals"] == straight["evals"]
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(first)
    assert a.step == b.step == 120
    for name, array in a.model_state.items():
        np.testing.assert_array_equal(array, b.model_state[name], err_msg=name)
    for name, array in a.optimizer_arrays.items():
        np.testing.assert_array_equal(array, b.optimizer_arrays[name], err_msg=name)
    assert a.state["rng"] == b.state["rng"] and a.state["scheduler"] == b.state["scheduler"]


def test_a_finished_run_refuses_to_resume_without_more_steps(run_60):
    with pytest.raises(TrainingError, match="already trained 60 steps"):
        Trainer.resume(run_60[0], progress=False, stream=io.StringIO()).train()


def test_the_run_directory_holds_checkpoint_metrics_and_pictures(run_60):
    out, metrics = run_60
    assert sorted(os.listdir(out)) == ["attention.png", "checkpoint.json", "checkpoints", "loss.png", "metrics.json"]
    assert len(os.listdir(out / "checkpoints")) == 1  # older checkpoints are deleted
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["steps"] == 60 and len(on_disk["losses"]) == 60 and len(on_disk["grad_norms"]) == 60
    assert 0.0 <= on_disk["exact_match"] <= 1.0 and on_disk["seconds"] > 0
    assert [e["step"] for e in on_disk["evals"]] == [30, 60]
    assert on_disk["heldout_examples"] == 20 and on_disk["beam_size"] == 2
    for picture in ("loss.png", "attention.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    ckpt = load_checkpoint(out)
    assert ckpt.step == 60 and ckpt.config == tiny(steps=60)
    assert sorted(os.listdir(ckpt.path)) == ["model.safetensors", "optimizer.npz", "tokenizer.json", "trainer.json"]


def test_training_lowers_the_loss(tmp_path):
    losses = trainer(tiny(steps=150, dropout=0.0, lr=3e-3, eval_every=150), tmp_path / "r").train()["losses"]
    assert np.mean(losses[-15:]) < 0.75 * np.mean(losses[:15])


def test_an_interrupted_save_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    t = trainer(tiny(steps=30), tmp_path / "r")
    t.train()
    pointer = (tmp_path / "r" / "checkpoint.json").read_text()
    t._train_step()  # step 31, not saved yet

    def half_written_then_interrupted(path, arrays):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization, "save_npz", half_written_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        t.save_checkpoint(elapsed=1.0)
    assert (tmp_path / "r" / "checkpoint.json").read_text() == pointer
    assert len(os.listdir(tmp_path / "r" / "checkpoints")) == 1  # the temporary directory is gone
    assert load_checkpoint(tmp_path / "r").step == 30
    resumed = Trainer.resume(tmp_path / "r", steps=31, progress=False, stream=io.StringIO())
    assert resumed.step == 30


def _one_line(err):
    message = str(err.value)
    assert "\n" not in message
    return message


def test_damaged_or_foreign_checkpoints_raise_one_checkpoint_error(tmp_path, run_60):
    out = run_60[0]
    good = load_checkpoint(out).path
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "missing")
    assert "no such directory" in _one_line(err)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="neither checkpoint.json"):
        load_checkpoint(foreign)
    (foreign / "checkpoint.json").write_text("not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(foreign)
    (foreign / "checkpoint.json").write_text('{"format": "something-else", "checkpoint": "x"}')
    with pytest.raises(CheckpointError, match="not an nptransformer checkpoint pointer"):
        load_checkpoint(foreign)

    copy = tmp_path / "copy"
    shutil.copytree(good, copy)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(copy)
    assert "model.safetensors" in _one_line(err)

    shutil.copy(os.path.join(good, "model.safetensors"), copy / "model.safetensors")
    state = json.loads((copy / "trainer.json").read_text())
    state["model"]["d_model"] = 32  # the weights no longer fit the model the spec describes
    (copy / "trainer.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(copy).build_model()
    assert "do not fit the model" in _one_line(err)

    state["format"] = "pytorch"
    (copy / "trainer.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="not an nptransformer checkpoint"):
        load_checkpoint(copy)


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_cause(tmp_path):
    t = trainer(tiny(steps=20, lr=1e30), tmp_path / "r")
    with pytest.raises(TrainingError) as err:
        t.train()
    message = _one_line(err)
    assert message.startswith("training stopped at step 2: the loss is nan")
    assert "detect_anomaly()" in message and "op '" in message  # the op that made the first non-finite value
    assert "the learning rate is too high" in message
    assert t.step == 1 and len(t.history["losses"]) == 1


def test_a_non_finite_weight_from_the_start_is_named(tmp_path):
    t = trainer(tiny(steps=5), tmp_path / "r")
    t.model.generator.bias.data[3] = np.inf
    with pytest.raises(TrainingError, match="step 1: the loss is .*parameter 'generator.bias' holds NaN or Inf.*before any update"):
        t.train()


def test_early_stopping_stops_when_the_validation_loss_stalls(tmp_path):
    stream = io.StringIO()
    t = Trainer(tiny(steps=100, lr=0.0, eval_every=5, patience=2), tmp_path / "r", progress=False, stream=stream)
    metrics = t.train()  # lr 0: the weights never change, so neither does the validation loss
    assert metrics["steps"] == 15 and metrics["stopped_early"] and metrics["best_step"] == 5
    assert "early stopping at step 15" in stream.getvalue()
    assert load_checkpoint(tmp_path / "r").step == 15


def test_the_plain_progress_bar_without_a_terminal_prints_a_line_per_tenth(monkeypatch):
    stream = io.StringIO()
    bar = _PlainBar(total=20, initial=0, desc="copy", stream=stream)
    for _ in range(20):
        bar.set_postfix_str("loss 1.0")
        bar.update(1)
    bar.write("an evaluation", file=stream)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-2].startswith("copy 20/20 [" + "#" * 30 + "]")
    assert lines[-1] == "an evaluation"
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    assert isinstance(progress_bar(10, stream=stream), _PlainBar)


def test_tqdm_is_used_when_installed():
    tqdm = pytest.importorskip("tqdm")
    bar = progress_bar(10, stream=io.StringIO())
    assert isinstance(bar, tqdm.tqdm)
    bar.close()


def test_generate_translates_with_beam_search_or_samples(run_60):
    out = run_60[0]
    beam = generate(out, "abcd")
    assert isinstance(beam, str) and beam == generate(out, "abcd", beam_size=2)
    assert generate(out, "abcd", temperature=0.7, seed=3) == generate(out, "abcd", temperature=0.7, seed=3)
    with pytest.raises(ConfigError, match="not both"):
        generate(out, "abcd", beam_size=2, top_k=3)
    with pytest.raises(ConfigError, match="at most 64"):
        generate(out, "a" * 65)


def test_language_model_on_a_text_file_trains_resumes_and_generates(tmp_path):
    text = tmp_path / "fox.txt"
    text.write_text(TEXT)
    config = tiny(task="lm", text=str(text), context=16, steps=20, eval_every=10)
    metrics = trainer(config, tmp_path / "lm").train()
    assert metrics["exact_match"] is None and metrics["perplexity"] > 1 and len(metrics["losses"]) == 20
    assert "attention.png" not in os.listdir(tmp_path / "lm")
    continuation = generate(tmp_path / "lm", "the quick", max_new_tokens=5, seed=0)
    assert isinstance(continuation, str) and len(continuation) <= 5
    text.write_text(TEXT + "more")
    with pytest.raises(DataError, match="changed since this run started"):
        Trainer.resume(tmp_path / "lm", steps=30, progress=False, stream=io.StringIO())


def test_language_model_with_bpe(tmp_path):
    text = tmp_path / "fox.txt"
    text.write_text(TEXT)
    config = tiny(task="lm", text=str(text), context=8, steps=3, eval_every=10, tokenizer="bpe", vocab_size=300)
    t = trainer(config, tmp_path / "lm")
    assert t.task.tokenizer.vocab_size == 300
    t.train()
    assert type(load_checkpoint(tmp_path / "lm").tokenizer).__name__ == "BPETokenizer"


def test_text_files_too_short_missing_or_empty_give_data_errors(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("tiny text")
    with pytest.raises(DataError, match="too short for context 64"):
        trainer(tiny(task="lm", text=str(short), context=64), tmp_path / "r")
    with pytest.raises(DataError, match="does not exist"):
        trainer(tiny(task="lm", text=str(tmp_path / "nope.txt")), tmp_path / "r")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        trainer(tiny(task="lm", text=str(empty)), tmp_path / "r")


@pytest.mark.parametrize("changes, message", [
    ({"task": "translate"}, "unknown task 'translate'"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"d_model": 10, "nhead": 4}, "divisible by nhead"),
    ({"dropout": 1.0}, r"dropout must be a number in \[0.0, 1.0\)"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"task": "lm"}, "needs a text file"),
    ({"text": "a.txt"}, "a text file is for task 'lm'"),
    ({"tokenizer": "bpe", "vocab_size": 100}, "vocab_size must be above 263"),
])
def test_config_errors_name_the_setting(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**changes)


def test_default_steps_follow_the_task():
    assert TrainConfig().steps == 1500 and TrainConfig(task="copy").steps == 600


@pytest.mark.skipif(cupy_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_fails_at_once(tmp_path):
    with pytest.raises(DeviceError, match="device 'cuda' is not usable here"):
        trainer(tiny(), tmp_path / "r", device="cuda")


@pytest.mark.cupy
@pytest.mark.skipif(not cupy_available(), reason="needs a GPU with CuPy")
def test_training_on_the_gpu_matches_the_cpu_closely(tmp_path):
    cpu = trainer(tiny(steps=10, dropout=0.0, eval_every=100), tmp_path / "cpu").train()
    gpu = trainer(tiny(steps=10, dropout=0.0, eval_every=100), tmp_path / "gpu", device="cuda").train()
    np.testing.assert_allclose(gpu["losses"], cpu["losses"], rtol=1e-3)
    assert load_checkpoint(tmp_path / "gpu").build_model().device == "cpu"


def test_training_on_a_stand_in_gpu_keeps_every_array_there(tmp_path, stand_in_gpu):
    """The 'cuda' path of the trainer, end to end (steps, evaluation with beam search, checkpoint),
    with arrays that refuse to meet NumPy's: the same numbers as on the CPU."""
    cpu = trainer(tiny(steps=10, dropout=0.0, eval_every=5), tmp_path / "cpu").train()
    on_gpu = trainer(tiny(steps=10, dropout=0.0, eval_every=5), tmp_path / "gpu", device="cuda")
    assert on_gpu.model.device == "cuda"
    gpu = on_gpu.train()
    np.testing.assert_allclose(gpu["losses"], cpu["losses"], rtol=1e-6)
    assert gpu["examples"] == cpu["examples"] and gpu["exact_match"] == cpu["exact_match"]
    assert load_checkpoint(tmp_path / "gpu").build_model().device == "cpu"


def test_a_new_run_never_overwrites_an_old_one(run_60):
    with pytest.raises(TrainingError, match="already holds a run"):
        trainer(tiny(steps=5), run_60[0]).train()
    assert load_checkpoint(run_60[0]).step == 60



def test_seq2seq_loss_is_teacher_forced_cross_entropy_over_real_target_positions():
    model = nn.Seq2SeqTransformer(9, 9, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                  dim_feedforward=16, dropout=0.0, pad_id=0, rng=np.random.default_rng(0))
    batch = seq2seq_batch([[3, 4, 5], [6]], [[7, 8], [5, 6, 7, 8]], 0, 1, 2)
    logits = model(batch.src, batch.tgt_in, src_key_padding_mask=batch.src_padding_mask,
                   tgt_key_padding_mask=batch.tgt_padding_mask).data.astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, batch.tgt_out[..., None], axis=-1)[..., 0]
    real = batch.tgt_out != 0
    assert real.sum() == 3 + 5  # each target and its EOS; the first row ends in padding
    np.testing.assert_allclose(seq2seq_loss(model, batch).item(), nll[real].mean(), rtol=1e-5)
    per_token = seq2seq_loss(model, batch, reduction="none").data
    np.testing.assert_allclose(per_token[real], nll[real], rtol=1e-5)
    assert np.all(per_token[~real] == 0)
    uniform = -log_p[real].mean(-1)  # the smoothing term: cross-entropy against the uniform distribution
    np.testing.assert_allclose(seq2seq_loss(model, batch, label_smoothing=0.1).item(),
                               (0.9 * nll[real] + 0.1 * uniform).mean(), rtol=1e-5)
