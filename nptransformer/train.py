"""Training: the loop, evaluation, early stopping, and checkpoints that resume bit for bit.

``Trainer(config, out_dir).train()`` trains an encoder-decoder on a generated task (``dates``,
``copy``, ``reverse``, ``sort``, ``addition``) or a GPT on a text file (``lm``). One step, in the
order of ``Trainer._train_step``::

    batch = task.batch(step)                            # a pure function of (seed, step)
    loss = task.loss(model, batch)                      # forward
    loss.backward()                                     # every p.grad
    norm = clip_grad_norm_(parameters, clip_grad)       # logged every step: a spike means trouble
    optimizer.step(); scheduler.step(); optimizer.zero_grad()

Every ``eval_every`` steps the model is evaluated on held-out data (validation loss, and greedy
exact match for the generated tasks), a checkpoint is written, and early stopping looks at the
validation loss. At the end: beam-search exact match on the held-out examples, ``metrics.json``,
``loss.png`` and (encoder-decoder runs) ``attention.png``, all in the run's directory.

``metrics.json`` holds: ``exact_match`` (beam search on the held-out examples; null for ``lm``),
``val_loss``, ``losses``, ``grad_norms`` and ``lrs`` (one value per step), ``evals`` (one record
per periodic evaluation), ``steps``, ``seconds`` (training time, periodic evaluations included,
added up over resumed sessions), ``eval_seconds`` (the final evaluation), ``stopped_early``,
``best_step``, ``config`` and ``parameters``; translation runs add ``beam_size``,
``heldout_examples`` and 20 ``examples``, language-model runs ``perplexity`` and a ``sample``.

Determinism. The model is initialized from ``nn.manual_seed(seed)``; the batch of step ``s`` is
drawn from a generator seeded with ``(seed, s)``, not from one long stream; dropout draws from
generators the modules own. So a run is a function of its config, and a checkpoint holds
everything the next step reads: weights, Adam's moments and step counts, the schedule's step,
every module generator's state, and the history. ``Trainer.resume`` continues bit for bit: 120
steps in one go and 60 + 60 with a resume in between give identical losses (tests/test_train.py).
The learning-rate schedule is the Transformer paper's warm-up and inverse-square-root decay,
which depends on the step only, not on the planned number of steps, so a run can be extended.

Checkpoints are never pickled. A run directory holds::

    checkpoint.json                   {"format": "nptransformer-checkpoint", "checkpoint": <dir>, ...}
    checkpoints/step-0000250-1a2b3c4d/
        model.safetensors             the weights
        optimizer.npz                 Adam's moment arrays
        trainer.json                  config, model spec, step, schedule, generator states, history
        tokenizer.json

A checkpoint is written into a temporary directory, renamed into place, and only then does
``checkpoint.json`` (itself replaced atomically) point to it; older checkpoints are deleted after
that. An interrupted save therefore leaves the last good checkpoint in place and in use.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import uuid

import numpy as np

from . import functional as F
from . import serialization
from .anomaly import AnomalyError, detect_anomaly
from .autograd import no_grad
from .backend import DeviceError, get_cupy, to_device
from .data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    BPETokenizer,
    CharTokenizer,
    DataError,
    TextFileDataset,
    Tokenizer,
    addition_pairs,
    copy_pairs,
    date_characters,
    date_pairs,
    lm_batches,
    pad_batch,
    reverse_pairs,
    seq2seq_batch,
    sort_pairs,
)
from .data.files import read_json, write_text_atomically
from .data.tasks import LETTERS
from .decoding.generate import Seq2SeqScorer
from .decoding.search import sample
from .early_stopping import EarlyStopping
from .nn import GPT, MultiheadAttention, Seq2SeqTransformer, manual_seed
from .nn.module import ModuleError, eval_mode
from .optim import Adam, NoamSchedule, clip_grad_norm_
from .plotting import save_attention_heatmap, save_loss_curve
from .serialization import CheckpointError

TASKS = ("dates", "copy", "reverse", "sort", "addition", "lm")
DEFAULT_STEPS = {"dates": 1500, "copy": 600, "reverse": 1000, "sort": 1200, "addition": 2500, "lm": 1000}
HELDOUT_SEED = 20240601  # held-out examples are the same whatever the training seed
CHECKPOINT_FORMAT = "nptransformer-checkpoint"
CHECKPOINT_VERSION = 1
QUICK_EVAL_EXAMPLES = 200  # greedy exact match at each periodic evaluation
MIN_DELTA = 1e-4  # early stopping: a validation loss lower by less than this is no improvement


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss or gradient, a finished run); one-line message."""


class ConfigError(ValueError):
    """A setting of a run (TrainConfig) or of ``generate`` is out of range or inconsistent; the
    message names the setting."""


def _seed(*keys) -> int:
    """One 64-bit seed from several integers (NumPy's SeedSequence mixes them thoroughly)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0])


# ============================================================================ configuration
@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in its checkpoints.

    The defaults train the encoder-decoder of ``nptransformer train``: 2 + 2 layers of width 64,
    batches of 64, Adam with the paper's warm-up to ``lr`` at step ``warmup`` and ``lr *
    sqrt(warmup / step)`` after it. ``steps=None`` takes the task's entry in DEFAULT_STEPS.
    ``clip_grad=0`` turns clipping off (the norm is still logged); ``patience=0`` turns early
    stopping off. ``text``, ``tokenizer`` ("char" or "bpe"), ``vocab_size`` (BPE) and
    ``context`` are for ``task="lm"``.
    """

    task: str = "dates"
    steps: int | None = None
    seed: int = 0
    batch_size: int = 64
    d_model: int = 64
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 256
    dropout: float = 0.0
    lr: float = 2e-3
    warmup: int = 200
    clip_grad: float = 1.0
    label_smoothing: float = 0.0
    eval_every: int = 250
    eval_examples: int = 500
    beam_size: int = 4
    patience: int = 5
    text: str | None = None
    tokenizer: str = "char"
    vocab_size: int = 512
    context: int = 64

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.steps is None:
            self.steps = DEFAULT_STEPS[self.task]
        positive = ("steps", "batch_size", "d_model", "nhead", "num_layers", "dim_feedforward", "warmup",
                    "eval_every", "eval_examples", "beam_size", "context")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ConfigError(f"patience must be an integer >= 0, got {self.patience!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name, low, high in (("dropout", 0.0, 1.0), ("label_smoothing", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value < high:
                raise ConfigError(f"{name} must be a number in [{low}, {high}), got {value!r}")
        for name in ("lr", "clip_grad"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.d_model % self.nhead:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        if self.tokenizer not in ("char", "bpe"):
            raise ConfigError(f"tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")
        if self.tokenizer == "bpe" and self.vocab_size <= 263:
            raise ConfigError(f"vocab_size must be above 263 (7 special tokens + 256 bytes) for BPE, got {self.vocab_size}")
        if self.task == "lm" and not self.text:
            raise ConfigError("task 'lm' needs a text file (text=..., or --text FILE)")
        if self.task != "lm" and self.text:
            raise ConfigError(f"a text file is for task 'lm'; task {self.task!r} generates its own data")
        if self.text:
            self.text = os.path.abspath(self.text)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}")
        return cls(**values)


# ============================================================================ tasks
def seq2seq_loss(model, batch, *, label_smoothing=0.0, reduction="mean"):
    """Teacher-forced cross-entropy of a ``Seq2SeqTransformer`` on a ``Seq2SeqBatch``.

    The decoder reads ``tgt_in`` (BOS, then the target) and is scored on ``tgt_out`` (the target,
    then EOS); padded positions (``model.pad_id``) count for nothing. ``batch`` is the five
    arrays of ``seq2seq_batch`` in its order: src, src_padding_mask, tgt_in, tgt_out,
    tgt_padding_mask.
    """
    src, src_pad, tgt_in, tgt_out, tgt_pad = batch
    logits = model(src, tgt_in, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad)  # (B, T, V)
    return F.cross_entropy(logits, tgt_out, ignore_index=model.pad_id, label_smoothing=label_smoothing,
                           reduction=reduction)


class Seq2SeqTask:
    """A generated translation task: (source, target) strings, one character per token, an
    encoder-decoder that reads the source and writes the target.

    Training batches are fresh pairs drawn with the seed (seed, step): the model never sees the
    same batch twice, and the batch of a step does not depend on the steps before it. The
    held-out examples are drawn with HELDOUT_SEED; for dates they come from the held-out days
    of ``date_split``, which no training pair uses.
    """

    ALPHABETS = {"copy": LETTERS, "reverse": LETTERS, "sort": LETTERS, "addition": "+0123456789"}
    MAX_TARGET_CHARS = {"dates": 10, "copy": 8, "reverse": 8, "sort": 8, "addition": 4}  # "2021-03-05", "999+999"
    MAX_LEN = 64  # positions of the model: the longest date source has 29 characters

    def __init__(self, config: TrainConfig, tokenizer: Tokenizer | None = None):
        self.config = config
        alphabet = date_characters() if config.task == "dates" else self.ALPHABETS[config.task]
        self.tokenizer = tokenizer or CharTokenizer(alphabet)
        self.heldout = self.pairs(config.eval_examples, HELDOUT_SEED, "heldout")

    def pairs(self, n, seed, split="train"):
        if self.config.task == "dates":
            return date_pairs(n, seed, split=split)
        make = {"copy": copy_pairs, "reverse": reverse_pairs, "sort": sort_pairs, "addition": addition_pairs}
        return make[self.config.task](n, seed)

    def model_spec(self) -> dict:
        c, V = self.config, self.tokenizer.vocab_size
        return {"kind": "seq2seq", "src_vocab_size": V, "tgt_vocab_size": V, "d_model": c.d_model, "nhead": c.nhead,
                "num_encoder_layers": c.num_layers, "num_decoder_layers": c.num_layers,
                "dim_feedforward": c.dim_feedforward, "dropout": c.dropout, "max_len": self.MAX_LEN, "pad_id": PAD_ID}

    @classmethod
    def max_output_len(cls, task, source_len) -> int:
        """Tokens to let the decoder write (EOS included): a copy, reversal or sort is as long as
        its source; a date or a sum has a bounded length."""
        longest = cls.MAX_TARGET_CHARS[task]
        return 1 + (max(longest, source_len) if task in ("copy", "reverse", "sort") else longest)

    def fingerprint(self) -> str:
        return ""

    def _encode(self, pairs):
        encode = self.tokenizer.encode
        return seq2seq_batch([encode(s) for s, _ in pairs], [encode(t) for _, t in pairs], PAD_ID, BOS_ID, EOS_ID)

    def batch(self, step: int):
        return self._encode(self.pairs(self.config.batch_size, _seed(self.config.seed, step)))

    def loss(self, model, batch, device, reduction="mean"):
        return seq2seq_loss(model, [to_device(a, device) for a in batch], label_smoothing=self.config.label_smoothing,
                            reduction=reduction)

    def translate(self, model, sources, beam_size):
        """The model's output string for each source string (beam search; greedy for beam_size=1)."""
        ids, _ = pad_batch([self.tokenizer.encode(s) for s in sources], PAD_ID)
        max_len = self.max_output_len(self.config.task, ids.shape[1])
        outputs = []
        for start in range(0, len(ids), 250):  # bounded memory: 250 sources x beam_size rows per call
            outputs += model.generate(ids[start : start + 250], BOS_ID, EOS_ID, max_len, beam_size=beam_size)
        return [self.tokenizer.decode(o) for o in outputs]

    def evaluate(self, model, device, n, beam_size) -> dict:
        """Validation loss (teacher forcing) and exact match of the first ``n`` held-out pairs."""
        pairs = self.heldout[:n]
        total, count = 0.0, 0
        with no_grad(), eval_mode(model):
            for start in range(0, len(pairs), 250):
                batch = self._encode(pairs[start : start + 250])
                total += float(self.loss(model, batch, device, reduction="sum").item())
                count += int((batch.tgt_out != PAD_ID).sum())
        predictions = self.translate(model, [s for s, _ in pairs], beam_size)
        correct = [p == t for p, (_, t) in zip(predictions, pairs)]
        return {"val_loss": total / count, "exact_match": sum(correct) / len(pairs), "examples": len(pairs),
                "predictions": predictions}

    def attention(self, model, source, prediction):
        """The last decoder layer's cross-attention (H, T, S) while the model writes
        ``prediction`` (and then EOS) for ``source``: row t is output token t, column s source token s."""
        src = np.array([self.tokenizer.encode(source)])
        out = self.tokenizer.encode(prediction)
        tgt_in = np.array([[BOS_ID, *out]])  # the decoder reads BOS y1 .. yn and writes y1 .. yn EOS
        mha = model.transformer.decoder.layers[-1].multihead_attn
        with no_grad(), eval_mode(model), _recording_weights(mha) as record:
            model(to_device(src, model.device), to_device(tgt_in, model.device))
        return record[-1][0]  # (1, H, T, S) -> (H, T, S)

    def show(self, pairs, predictions) -> list[str]:
        width = max(len(repr(s)) for s, _ in pairs)
        return [f"  {s!r:<{width}} -> {p}" + ("   ok" if p == t else f"   WRONG (expected {t})")
                for (s, t), p in zip(pairs, predictions)]


class LanguageModelTask:
    """A GPT on a text file: the last 10 % of the characters are held out for validation.

    The tokenizer is built from the file (characters, or byte-level BPE learned on the training
    part) and saved with the checkpoint; a resumed run checks that the file has not changed.
    """

    def __init__(self, config: TrainConfig, tokenizer: Tokenizer | None = None):
        self.config = config
        data = TextFileDataset(config.text)
        train_text, val_text = data.split(0.1)
        if tokenizer is None:
            if config.tokenizer == "char":
                tokenizer = CharTokenizer.from_text(data.text)
            else:
                tokenizer = BPETokenizer.train(train_text, config.vocab_size)
        self.tokenizer = tokenizer
        self._fingerprint = hashlib.sha256(data.text.encode("utf-8", "surrogatepass")).hexdigest()
        self.train_ids = np.asarray(tokenizer.encode(train_text), dtype=np.int64)
        self.val_ids = np.asarray(tokenizer.encode(val_text), dtype=np.int64)
        need = config.context + 1
        if min(len(self.train_ids), len(self.val_ids)) < need:
            raise DataError(
                f"text file {config.text!r} is too short for context {config.context}: its training and validation "
                f"parts have {len(self.train_ids)} and {len(self.val_ids)} tokens, each needs at least {need} "
                "(use a longer text or a smaller --context)"
            )
        self.prompt = val_text[: min(20, config.context // 2)]

    def model_spec(self) -> dict:
        c = self.config
        return {"kind": "gpt", "vocab_size": self.tokenizer.vocab_size, "d_model": c.d_model, "n_layers": c.num_layers,
                "n_heads": c.nhead, "max_len": c.context, "dropout": c.dropout, "dim_feedforward": c.dim_feedforward}

    def fingerprint(self) -> str:
        return self._fingerprint

    def batch(self, step: int):
        c = self.config
        return next(lm_batches(self.train_ids, c.batch_size, c.context, seed=_seed(c.seed, step), num_batches=1))

    def loss(self, model, batch, device, reduction="mean"):
        inputs, targets = (to_device(a, device) for a in batch)
        return F.cross_entropy(model(inputs), targets, label_smoothing=self.config.label_smoothing, reduction=reduction)

    def evaluate(self, model, device, n, beam_size) -> dict:
        """Validation loss and perplexity (per token) on 32 fixed windows of the held-out text
        (``n`` and ``beam_size`` are for the translation tasks)."""
        batch = next(lm_batches(self.val_ids, 32, self.config.context, seed=HELDOUT_SEED, num_batches=1))
        with no_grad(), eval_mode(model):
            val_loss = float(self.loss(model, batch, device).item())
        return {"val_loss": val_loss, "perplexity": math.exp(min(val_loss, 700.0)), "exact_match": None}

    def continuation(self, model, seed):
        """A sampled continuation (temperature 0.8) of the first characters of the held-out text."""
        prompt = self.tokenizer.encode(self.prompt)
        new = model.generate(prompt, max(1, min(200, self.config.context - len(prompt) + 1)), do_sample=True,
                             temperature=0.8, seed=seed)
        return self.tokenizer.decode(new)


def make_task(config: TrainConfig, tokenizer: Tokenizer | None = None):
    return LanguageModelTask(config, tokenizer) if config.task == "lm" else Seq2SeqTask(config, tokenizer)


def build_model(spec: dict):
    """The model a checkpoint's ``model`` spec describes (weights freshly initialized)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind == "seq2seq":
        return Seq2SeqTransformer(**spec)
    if kind == "gpt":
        return GPT(**spec)
    raise ModuleError(f"unknown model kind {kind!r}; expected 'seq2seq' or 'gpt'")


@contextlib.contextmanager
def _recording_weights(mha: MultiheadAttention):
    """Inside, every call of ``mha`` also computes its per-head weights (B, H, T, S) and appends
    them (as NumPy arrays) to the list this yields. The instance's own ``forward`` is wrapped for
    the duration and restored after; the class is not touched."""
    record = []
    forward = mha.forward

    def recording(*args, **kwargs):
        kwargs.update(need_weights=True, average_attn_weights=False)
        out, weights = forward(*args, **kwargs)
        record.append(weights.numpy())
        return out, weights

    mha.forward = recording
    try:
        yield record
    finally:
        del mha.forward


# ============================================================================ checkpoints
@dataclasses.dataclass
class Checkpoint:
    """What ``load_checkpoint`` reads: the files of one checkpoint directory, checked."""

    path: str  # the checkpoint directory
    run_dir: str | None  # the run directory whose checkpoint.json points here, if loaded through it
    config: TrainConfig
    model_spec: dict
    tokenizer: Tokenizer
    model_state: dict
    optimizer_arrays: dict
    state: dict  # the rest of trainer.json: step, optimizer scalars, scheduler, rng, history, ...

    @property
    def step(self) -> int:
        return self.state["step"]

    def build_model(self, device="cpu"):
        """The trained model, on ``device``, in eval mode."""
        try:
            model = build_model(self.model_spec)
            model.load_state_dict(self.model_state)
        except (ModuleError, TypeError, ValueError) as err:
            raise _cannot_load(self.path, f"the weights do not fit the model ({err})") from None
        return model.to(device).eval()


def _cannot_load(path, why) -> CheckpointError:
    return CheckpointError(f"cannot load checkpoint '{path}': {why}")


def _read_checkpoint_json(path, what):
    try:
        return read_json(path, what=what)
    except DataError as err:
        raise CheckpointError(f"cannot load checkpoint: {err}") from None


def _resolve(path) -> tuple[str, str | None]:
    """(checkpoint directory, run directory or None) for a run directory or a checkpoint directory."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise _cannot_load(path, "no such directory")
    if not os.path.isdir(path):
        raise _cannot_load(path, "it is a file; give the run directory (with checkpoint.json) or a checkpoint directory")
    pointer = os.path.join(path, "checkpoint.json")
    if os.path.isfile(pointer):
        record = _read_checkpoint_json(pointer, "checkpoint pointer")
        if record.get("format") != CHECKPOINT_FORMAT or not isinstance(record.get("checkpoint"), str):
            raise _cannot_load(path, f"{pointer} is not an nptransformer checkpoint pointer")
        target = os.path.normpath(os.path.join(path, record["checkpoint"]))
        if not os.path.isdir(target):
            raise _cannot_load(path, f"checkpoint.json points to {record['checkpoint']!r}, which does not exist")
        return target, path
    if os.path.isfile(os.path.join(path, "trainer.json")):
        return path, None
    raise _cannot_load(path, "it holds neither checkpoint.json (a run directory) nor trainer.json (a checkpoint directory)")


def load_checkpoint(path) -> Checkpoint:
    """Read and check a checkpoint: ``path`` is a run directory (its checkpoint.json says which
    checkpoint is current) or a checkpoint directory. Every problem (missing or truncated files,
    another program's files, a malformed trainer.json) raises one CheckpointError; so do weights
    that do not fit the model, found when it is built (``Checkpoint.build_model``, ``Trainer.resume``)."""
    folder, run_dir = _resolve(path)
    state = _read_checkpoint_json(os.path.join(folder, "trainer.json"), "checkpoint file")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise _cannot_load(folder, "trainer.json is not an nptransformer checkpoint (no 'format': "
                                   f"'{CHECKPOINT_FORMAT}')")
    if state.get("version") != CHECKPOINT_VERSION:
        raise _cannot_load(folder, f"checkpoint version {state.get('version')!r}; this version reads {CHECKPOINT_VERSION}")
    try:
        tokenizer = Tokenizer.load(os.path.join(folder, "tokenizer.json"))
    except DataError as err:
        raise CheckpointError(f"cannot load checkpoint: {err}") from None
    try:
        config = TrainConfig.from_dict(state.pop("config"))
        spec = state.pop("model")
        int(state["step"])
    except (KeyError, TypeError, ConfigError) as err:
        raise _cannot_load(folder, f"trainer.json is malformed ({type(err).__name__}: {err})") from None
    model_state = serialization.load_safetensors(os.path.join(folder, "model.safetensors"))
    optimizer_arrays = serialization.load_npz(os.path.join(folder, "optimizer.npz"))
    return Checkpoint(folder, run_dir, config, spec, tokenizer, model_state, optimizer_arrays, state)


def _write_checkpoint(run_dir, step, write_files) -> str:
    """Write a checkpoint with ``write_files(folder)`` into a fresh directory, then point
    checkpoint.json at it, then delete the older ones. Returns the new directory."""
    root = os.path.join(run_dir, "checkpoints")
    name = f"step-{step:07d}-{uuid.uuid4().hex[:8]}"
    tmp = os.path.join(root, f".{name}.tmp")
    try:
        os.makedirs(tmp)
    except OSError as err:
        raise CheckpointError(f"cannot save a checkpoint in '{root}': {err.strerror}") from None
    try:
        write_files(tmp)
        os.rename(tmp, os.path.join(root, name))  # a directory rename is atomic
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"cannot save a checkpoint in '{root}': {err.strerror}") from None
        raise
    pointer = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "checkpoint": f"checkpoints/{name}",
               "step": step}
    write_text_atomically(os.path.join(run_dir, "checkpoint.json"), json.dumps(pointer, indent=1) + "\n",
                          what="checkpoint pointer")
    for entry in os.listdir(root):  # checkpoint.json has moved on: the others are garbage now
        if entry != name:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    return os.path.join(root, name)


# ============================================================================ progress bars
class _PlainBar:
    """A progress bar without tqdm: redrawn in place on a terminal, a line per 10 % otherwise."""

    def __init__(self, total, initial, desc, stream):
        self.total, self.n, self.desc, self.stream = total, initial, desc, stream
        self.start_n, self.start = initial, time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.postfix, self.last_draw, self.width = "", 0.0, 0

    def _line(self):
        done = int(30 * self.n / self.total)
        rate = (self.n - self.start_n) / max(time.perf_counter() - self.start, 1e-9)
        return f"{self.desc} {self.n}/{self.total} [{'#' * done}{'.' * (30 - done)}] {rate:.1f} steps/s {self.postfix}"

    def update(self, n=1):
        before, self.n = self.n, self.n + n
        now = time.perf_counter()
        if self.tty and (now - self.last_draw >= 0.2 or self.n == self.total):
            line = self._line()
            self.stream.write("\r" + line.ljust(self.width))
            self.stream.flush()
            self.width, self.last_draw = len(line), now
        elif not self.tty and 10 * self.n // self.total > 10 * before // self.total:
            self.stream.write(self._line() + "\n")

    def set_postfix_str(self, text, refresh=False):
        self.postfix = text

    def write(self, text, file=None):
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
        (file or self.stream).write(text + "\n")

    def close(self):
        if self.tty and self.width:
            self.stream.write("\n")


class _NoBar:
    """The progress bar of ``progress=False``: messages still go out, nothing else does."""

    def update(self, n=1):
        pass

    def set_postfix_str(self, text, refresh=False):
        pass

    def write(self, text, file=None):
        print(text, file=file or sys.stdout)

    def close(self):
        pass


def progress_bar(total, initial=0, desc="", enabled=True, stream=None):
    """tqdm when it is installed, a plain bar otherwise, nothing when not ``enabled``. Both have
    ``update``, ``set_postfix_str``, ``write(text, file=...)`` and ``close``."""
    if not enabled:
        return _NoBar()
    stream = stream or sys.stderr
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(total, initial, desc, stream)
    return tqdm(total=total, initial=initial, desc=desc, unit="step", file=stream, dynamic_ncols=True, mininterval=0.2)


# ============================================================================ the trainer
class Trainer:
    """Trains one run and writes it to ``out_dir``; see the module docstring.

    ``device`` is "cpu" or "cuda" (a DeviceError at once when no GPU is usable). Messages go to
    ``stream`` (default stdout), the progress bar to stderr; ``progress=False`` drops the bar.
    """

    def __init__(self, config: TrainConfig, out_dir, *, device="cpu", progress=True, stream=None,
                 tokenizer: Tokenizer | None = None):
        if device == "cuda":
            get_cupy()  # fails here, with the reason, rather than at the first array
        elif device != "cpu":
            raise DeviceError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
        self.config, self.out_dir, self.device = config, os.fspath(out_dir), device
        self.progress, self.stream = progress, stream or sys.stdout
        self.task = make_task(config, tokenizer)
        manual_seed(config.seed)  # every layer draws its initial weights and dropout seeds from here
        self.model = build_model(self.task.model_spec()).to(device)
        # Adam's default betas: the paper's beta2 = 0.98 gave loss spikes late in these short runs
        self.optimizer = Adam(self.model.parameters(), lr=config.lr)
        # Noam's schedule, scaled so that its peak (at step `warmup`) is config.lr
        self.scheduler = NoamSchedule(self.optimizer, config.d_model, config.warmup,
                                      factor=config.lr * math.sqrt(config.d_model * config.warmup))
        self.step = 0
        self.history = {"losses": [], "grad_norms": [], "lrs": [], "evals": []}
        self.early_stopping = EarlyStopping(config.patience or None, MIN_DELTA)  # on the validation loss
        self.seconds = 0.0  # training time of the sessions before this one (a resumed run)
        self.saved_step = None  # the step of the checkpoint on disk, if any
        self._bar = _NoBar()

    # ------------------------------------------------------------------ resume
    @classmethod
    def resume(cls, path, *, steps=None, device="cpu", progress=True, stream=None) -> Trainer:
        """The trainer of the run in ``path`` (a run directory), ready to continue to ``steps``
        (default: the run's own ``steps``)."""
        ckpt = load_checkpoint(path)
        if ckpt.run_dir is None:
            raise CheckpointError(f"cannot resume from '{os.fspath(path)}': give the run directory, the one "
                                  "that holds checkpoint.json")
        config = ckpt.config
        if steps is not None:
            config = dataclasses.replace(config, steps=steps)
        trainer = cls(config, ckpt.run_dir, device=device, progress=progress, stream=stream, tokenizer=ckpt.tokenizer)
        trainer._restore(ckpt)
        return trainer

    def _restore(self, ckpt: Checkpoint):
        state = ckpt.state
        if state.get("data_fingerprint", "") != self.task.fingerprint():
            raise DataError(f"text file {self.config.text!r} changed since this run started (its SHA-256 differs); "
                            "a resumed run must read the same text")
        if ckpt.model_spec != self.task.model_spec():
            raise _cannot_load(ckpt.path, "its model spec does not match its own config")
        try:
            self.model.load_state_dict(ckpt.model_state)
            self.optimizer.load_state_dict(_optimizer_state(ckpt.optimizer_arrays, state["optimizer"]))
            self.scheduler.load_state_dict(state["scheduler"])
            generators = _generators(self.model)
            if set(generators) != set(state["rng"]):
                raise ValueError(f"generator states for {sorted(state['rng'])}, the model has {sorted(generators)}")
            for name, rng in generators.items():
                rng.bit_generator.state = state["rng"][name]
            self.step = int(state["step"])
            self.history = {k: list(state["history"][k]) for k in self.history}
            self.early_stopping.load_state_dict(state["early_stopping"])
            self.seconds = float(state["seconds"])
        except (KeyError, TypeError, ValueError) as err:
            raise _cannot_load(ckpt.path, f"trainer.json or optimizer.npz is malformed ({type(err).__name__}: {err})") from None
        self.saved_step = self.step

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, elapsed: float) -> str:
        """Write the current state as the run's checkpoint (atomically; see the module docstring)."""
        optimizer = self.optimizer.state_dict()
        arrays, scalars = {}, {}
        for number, entry in optimizer["state"].items():
            for key, value in entry.items():
                if key in self.optimizer.scalar_state_keys:
                    scalars.setdefault(str(number), {})[key] = int(value)
                else:
                    arrays[f"{number}.{key}"] = to_device(value, "cpu")
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": self.step,
            "config": self.config.to_dict(), "model": self.task.model_spec(),
            "optimizer": {"param_groups": optimizer["param_groups"], "scalar_state": scalars},
            "scheduler": self.scheduler.state_dict(),
            "rng": {name: rng.bit_generator.state for name, rng in _generators(self.model).items()},
            "history": self.history, "early_stopping": self.early_stopping.state_dict(), "seconds": elapsed,
            "data_fingerprint": self.task.fingerprint(),
        }

        def write_files(folder):
            self.model.save(os.path.join(folder, "model.safetensors"))
            serialization.save_npz(os.path.join(folder, "optimizer.npz"), arrays)
            self.task.tokenizer.save(os.path.join(folder, "tokenizer.json"))
            write_text_atomically(os.path.join(folder, "trainer.json"), json.dumps(state) + "\n", what="checkpoint file")

        folder = _write_checkpoint(self.out_dir, self.step, write_files)
        self.saved_step = self.step
        return folder

    # ------------------------------------------------------------------ one step
    def _train_step(self):
        step = self.step + 1
        batch = self.task.batch(step)
        lr = self.optimizer.param_groups[0]["lr"]
        # NumPy's overflow warnings are off: a non-finite loss or gradient norm is caught below
        # and explained in one message, which says more than "overflow encountered in matmul".
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            loss = self.task.loss(self.model, batch, self.device)
            value = float(loss.item())
            if not math.isfinite(value):
                raise TrainingError(self._explain_nonfinite(step, f"the loss is {value}", batch))
            loss.backward()
            norm = clip_grad_norm_(self.model.parameters(), self.config.clip_grad or math.inf)
            if not math.isfinite(norm):
                raise TrainingError(self._explain_nonfinite(step, f"the gradient norm is {norm} (loss {value:.4g})", batch))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.step = step
        self.history["losses"].append(value)
        self.history["grad_norms"].append(norm)
        self.history["lrs"].append(lr)

    def _explain_nonfinite(self, step, what, batch) -> str:
        """One line: the step, what is not finite, where it first appeared, and the likely cause."""
        largest, largest_name, bad = 0.0, "", None
        for name, p in self.model.named_parameters():
            values = np.abs(to_device(p.data, "cpu"))
            if not np.isfinite(values).all():
                bad = bad or name
            elif values.size and values.max() > largest:
                largest, largest_name = float(values.max()), name
        lr = f"lr {self.history['lrs'][-1]:.3g}" if self.history["lrs"] else ""
        if bad is not None:
            found = f"parameter '{bad}' holds NaN or Inf"
        else:  # the weights are finite: find the op that made the first NaN or Inf
            self.optimizer.zero_grad()
            try:
                with detect_anomaly():
                    self.task.loss(self.model, batch, self.device).backward()
                found = "rerun under nptransformer.detect_anomaly() the step stayed finite (so a random draw, dropout, made it)"
            except AnomalyError as err:
                found = "rerun under nptransformer.detect_anomaly(): " + str(err).removeprefix("detect_anomaly: ")
        if lr and (bad is not None or largest > 1e4):
            cause = (f"the updates diverged ({lr} at step {step - 1}; largest finite weight {largest:.3g} in "
                     f"'{largest_name}'): the learning rate is too high, lower --lr or keep --clip-grad on")
        elif lr:
            cause = f"a numerically unstable op (named above) met extreme values; try a lower --lr ({lr} at step {step - 1})"
        else:
            cause = "it is there before any update, so it comes from the initial weights or the data, not from training"
        where = f"; the last checkpoint in {self.out_dir} is from step {self.saved_step}" if self.saved_step else ""
        return f"training stopped at step {step}: {what}; {found}; likely cause: {cause}{where}"

    # ------------------------------------------------------------------ evaluation
    def _periodic_eval(self, elapsed) -> bool:
        """Evaluate, log, checkpoint; True when early stopping says stop."""
        result = self.task.evaluate(self.model, self.device, min(QUICK_EVAL_EXAMPLES, self.config.eval_examples), 1)
        record = {"step": self.step, "val_loss": result["val_loss"], "exact_match": result["exact_match"]}
        self.history["evals"].append(record)
        es = self.early_stopping
        es.update(result["val_loss"], self.step)
        line = f"step {self.step}: validation loss {result['val_loss']:.4f}"
        if result["exact_match"] is not None:
            line += f", exact match {100 * result['exact_match']:.1f}% (greedy, {result['examples']} held-out)"
        else:
            line += f", perplexity {result['perplexity']:.2f}"
        self._bar.write(line, file=self.stream)
        self.save_checkpoint(elapsed)
        if es.should_stop:
            self._bar.write(f"early stopping at step {self.step}: the validation loss has not improved for "
                            f"{es.patience} evaluations (best {es.best:.4f} at step {es.best_step})", file=self.stream)
        return es.should_stop

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        """Train up to ``config.steps`` (or early stopping), then evaluate and write the run's files.
        Returns the metrics (also written to ``metrics.json``)."""
        c = self.config
        if self.saved_step is None and os.path.exists(os.path.join(self.out_dir, "checkpoint.json")):
            raise TrainingError(f"{self.out_dir} already holds a run; continue it with --resume (Trainer.resume) "
                                "or write the new run somewhere else")
        if self.step >= c.steps:
            raise TrainingError(f"the run in {self.out_dir} has already trained {self.step} steps; "
                                f"ask for more than {self.step} steps to continue it")
        try:
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot write the run into '{self.out_dir}': {err.strerror}") from None
        self.model.train()
        self.early_stopping.should_stop = False
        start = time.perf_counter()
        self._bar = progress_bar(c.steps, self.step, c.task, self.progress)
        try:
            while self.step < c.steps:
                self._train_step()
                self._bar.set_postfix_str(f"loss {self.history['losses'][-1]:.4f}, lr {self.history['lrs'][-1]:.2e}, "
                                          f"|grad| {self.history['grad_norms'][-1]:.2f}", refresh=False)
                self._bar.update(1)
                if self.step % c.eval_every == 0 and self._periodic_eval(self.seconds + time.perf_counter() - start):
                    break
        finally:
            self._bar.close()
            self._bar = _NoBar()
        elapsed = self.seconds + time.perf_counter() - start
        if self.saved_step != self.step:
            self.save_checkpoint(elapsed)
        return self._finish(elapsed)

    def _finish(self, elapsed) -> dict:
        """The final evaluation, metrics.json, the pictures, and a few examples printed."""
        c, say = self.config, lambda text: print(text, file=self.stream)
        start = time.perf_counter()
        result = self.task.evaluate(self.model, self.device, c.eval_examples, c.beam_size)
        metrics = {
            "task": c.task, "steps": self.step, "seconds": round(elapsed, 3),
            "exact_match": result["exact_match"], "val_loss": result["val_loss"],
            "stopped_early": self.early_stopping.should_stop, "best_step": self.early_stopping.best_step,
            "losses": self.history["losses"], "grad_norms": self.history["grad_norms"], "lrs": self.history["lrs"],
            "evals": self.history["evals"], "config": c.to_dict(),
            "parameters": self.model.num_parameters(),
        }
        files = ["checkpoint.json", "checkpoints/", "metrics.json", "loss.png"]
        save_loss_curve(os.path.join(self.out_dir, "loss.png"), self.history["losses"], self.history["evals"],
                        title=f"{c.task}: training loss")
        if isinstance(self.task, Seq2SeqTask):
            pairs, predictions = self.task.heldout[: c.eval_examples], result["predictions"]
            metrics.update(beam_size=c.beam_size, heldout_examples=len(pairs),
                           examples=[{"source": s, "target": t, "prediction": p} for (s, t), p in zip(pairs[:20], predictions)])
            # the first example written with (Latin) words ('march 5th, 2021'): its attention reorders
            # the most, and the plot's default font has every one of its characters
            shown = next((i for i, (src, _) in enumerate(pairs) if src.isascii() and any(ch.isalpha() for ch in src)), 0)
            source, prediction = pairs[shown][0], predictions[shown]
            weights = self.task.attention(self.model, source, prediction)
            target_tokens = [self.task.tokenizer.id_to_token(i) for i in self.task.tokenizer.encode(prediction)] + ["<eos>"]
            save_attention_heatmap(os.path.join(self.out_dir, "attention.png"), weights, list(source), target_tokens,
                                   title=f"cross-attention of the last decoder layer while translating {source!r}")
            files.append("attention.png")
            say(f"held-out examples (beam search, beam size {c.beam_size}):")
            for line in self.task.show(pairs[:6], predictions[:6]):
                say(line)
            summary = (f"exact match: {100 * result['exact_match']:.1f}% ({round(result['exact_match'] * len(pairs))} "
                       f"of {len(pairs)} held-out examples, beam size {c.beam_size})")
        else:
            metrics["perplexity"] = result["perplexity"]
            sample_text = self.task.continuation(self.model, c.seed)
            metrics["sample"] = {"prompt": self.task.prompt, "continuation": sample_text}
            say(f"sample (temperature 0.8): {self.task.prompt!r} -> {sample_text!r}")
            summary = f"validation loss: {result['val_loss']:.4f} (perplexity {result['perplexity']:.2f} per token)"
        metrics["eval_seconds"] = round(time.perf_counter() - start, 3)
        write_text_atomically(os.path.join(self.out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n",
                              what="metrics file")
        say(summary)
        say(f"{self.step} steps in {elapsed:.1f} s (final evaluation {metrics['eval_seconds']:.1f} s); "
            f"wrote {self.out_dir}: {', '.join(files)}")
        return metrics


def _generators(model) -> dict:
    """name -> numpy Generator for every module that owns one (Dropout's ``rng``), in module order."""
    return {name: m.rng for name, m in model.named_modules() if isinstance(getattr(m, "rng", None), np.random.Generator)}


def _optimizer_state(arrays: dict, saved: dict) -> dict:
    """An optimizer state_dict from optimizer.npz (arrays named "<parameter number>.<key>") and the
    JSON part (param groups and the integer per-parameter state, such as Adam's step)."""
    state = {}
    for name, array in arrays.items():
        number, _, key = name.partition(".")
        state.setdefault(int(number), {})[key] = array
    for number, entry in saved["scalar_state"].items():
        state.setdefault(int(number), {}).update(entry)
    return {"state": state, "param_groups": saved["param_groups"]}


# ============================================================================ entry points
def default_out_dir(task: str) -> str:
    """runs/<task>-<date>-<time>, with a suffix when that directory exists already."""
    base = os.path.join("runs", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def train(config: TrainConfig | None = None, out_dir=None, **kwargs) -> dict:
    """Train a run from scratch (``Trainer(config, out_dir, **kwargs).train()``); returns its metrics."""
    config = config or TrainConfig()
    return Trainer(config, out_dir or default_out_dir(config.task), **kwargs).train()


def generate(path, prompt: str, *, beam_size=None, temperature=None, top_k=None, top_p=None, max_new_tokens=None,
             seed=None, device="cpu") -> str:
    """The text the model of a run writes for ``prompt``: an encoder-decoder's translation, a
    GPT's continuation. ``path``: a run directory or a checkpoint directory.

    Beam search when ``beam_size`` is given, sampling when any of ``temperature``, ``top_k``,
    ``top_p`` is (not both). With neither: an encoder-decoder uses beam search with the run's
    beam size, a GPT samples at temperature 1. ``max_new_tokens`` caps the output (EOS included).
    """
    sampling = any(v is not None for v in (temperature, top_k, top_p))
    if sampling and beam_size is not None:
        raise ConfigError("choose beam search (beam_size) or sampling (temperature, top_k, top_p), not both")
    if not prompt:
        raise ConfigError("the prompt is empty")
    ckpt = load_checkpoint(path)
    model, tokenizer = ckpt.build_model(device), ckpt.tokenizer
    ids = tokenizer.encode(prompt)
    options = {"temperature": 1.0 if temperature is None else temperature, "top_k": top_k or 0,
               "top_p": 1.0 if top_p is None else top_p, "seed": seed}
    if ckpt.model_spec["kind"] == "gpt":
        room = model.max_len - len(ids) + 1  # positions left after the prompt (the last new token needs none)
        if room < 1:
            raise ConfigError(f"the prompt has {len(ids)} tokens; this model reads at most {model.max_len}")
        n = min(max_new_tokens or room, room)
        if beam_size is not None:
            return tokenizer.decode(model.generate(ids, n, beam_size=beam_size))
        return tokenizer.decode(model.generate(ids, n, do_sample=True, **options))
    if len(ids) > model.max_len:
        raise ConfigError(f"the prompt has {len(ids)} tokens; this model reads at most {model.max_len}")
    max_len = min(max_new_tokens or Seq2SeqTask.max_output_len(ckpt.config.task, len(ids)), model.max_len)
    if sampling:
        tokens = sample(Seq2SeqScorer(model, np.array([ids])), BOS_ID, EOS_ID, max_len, **options)
    else:
        tokens = model.generate(np.array([ids]), BOS_ID, EOS_ID, max_len, beam_size=beam_size or ckpt.config.beam_size)[0]
    return tokenizer.decode(tokens)
