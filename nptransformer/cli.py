"""The ``nptransformer`` command line (also ``python -m nptransformer``).

    nptransformer train                     train the default run: date normalization
    nptransformer train --task lm --text F  a GPT on any text file
    nptransformer train --resume DIR        continue a run where its checkpoint left it
    nptransformer generate --checkpoint DIR --prompt TEXT
    nptransformer demo                      back-propagate through a small function, gradcheck it

Every command has ``--help``. A mistake on the command line gets argparse's usage message and
exit status 2; a problem found while running (a missing or empty file, a damaged checkpoint, no
GPU, a loss that turned NaN) gets one line ``nptransformer: error: ...`` and exit status 1.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

import numpy as np

from . import bench as _bench
from .autograd import OpError
from .backend import DeviceError
from .data import DataError
from .nn import ModuleError
from .serialization import CheckpointError
from .train import DEFAULT_STEPS, TASKS, ConfigError, TrainConfig, Trainer, TrainingError, default_out_dir, generate

_RUNTIME_ERRORS = (DataError, CheckpointError, ModuleError, DeviceError, TrainingError, ConfigError, OpError)


def _demo(args, parser) -> int:
    """Build a small function, back-propagate through it, and check the gradients numerically."""
    import nptransformer as nt

    rng = np.random.default_rng(args.seed)
    x = nt.Tensor(rng.standard_normal((4, 3)), requires_grad=True)  # float64: what gradcheck wants
    w = nt.Tensor(rng.standard_normal((3, 2)), requires_grad=True)

    def f(x, w):
        h = (x @ w).tanh()  # (4, 3) @ (3, 2) -> (4, 2)
        return (h * h).mean()

    loss = f(x, w)
    loss.backward()
    print("f(x, W) = mean(tanh(x @ W)^2)")
    print(f"  loss      = {loss.item():.6f}")
    print(f"  dL/dW     =\n{np.array2string(w.grad, precision=5, prefix='  ')}")
    print(f"  gradcheck : {nt.gradcheck(f, [x, w])} (analytic gradients equal central differences in float64)")

    class BrokenSquare(nt.Function):
        """x ** 2 with a deliberately wrong backward (forgot the factor 2)."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, dout):
            (x,) = ctx.saved
            return x * dout

    print("\nA Function with a wrong backward, and what gradcheck says about it:")
    try:
        nt.gradcheck(BrokenSquare.apply, [x])
    except nt.GradcheckError as err:
        print("  " + str(err).replace("\n", "\n  "))
    return 0


# --------------------------------------------------------------------------- train
def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def _float_in(low, high, low_open=False, high_open=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text}")
        return value

    return parse


_RUN = "the run"
_LM = "language modelling (--task lm)"
_MODEL = "model and optimization"
_EVAL = "evaluation"
_N = {"type": _int_at_least(1), "metavar": "N"}
_X = {"type": _float_in(0, float("inf")), "metavar": "X"}
_P = {"type": _float_in(0, 1), "metavar": "X"}

# The settings of a run: (group, flag, TrainConfig field, argparse options, help). They default
# to None here so that `--resume` can tell which were given; TrainConfig fills in its defaults,
# which the help shows.
_RUN_SETTINGS = (
    (_RUN, "--task", "task", {"choices": TASKS}, "what to learn"),
    (_RUN, "--seed", "seed", {"type": _int_at_least(0), "metavar": "N"}, "seed of the weights and the data"),
    (_LM, "--text", "text", {"metavar": "FILE"}, "a UTF-8 text file to train a GPT on"),
    (_LM, "--tokenizer", "tokenizer", {"choices": ("char", "bpe")}, "characters or byte-level BPE"),
    (_LM, "--vocab-size", "vocab_size", {"type": _int_at_least(264), "metavar": "N"}, "BPE vocabulary size"),
    (_LM, "--context", "context", _N, "tokens per training window"),
    (_MODEL, "--d-model", "d_model", _N, "model width"),
    (_MODEL, "--heads", "nhead", _N, "attention heads"),
    (_MODEL, "--layers", "num_layers", _N, "encoder and decoder layers each"),
    (_MODEL, "--ff", "dim_feedforward", _N, "feed-forward width"),
    (_MODEL, "--dropout", "dropout", _P, "dropout probability"),
    (_MODEL, "--batch-size", "batch_size", _N, "examples per step"),
    (_MODEL, "--lr", "lr", _X, "peak learning rate, reached after --warmup steps, then decaying as 1/sqrt(step)"),
    (_MODEL, "--warmup", "warmup", _N, "warm-up steps"),
    (_MODEL, "--clip-grad", "clip_grad", _X, "clip the gradient norm to this; 0 = no clipping"),
    (_MODEL, "--label-smoothing", "label_smoothing", _P, "label smoothing of the cross-entropy"),
    (_EVAL, "--eval-every", "eval_every", _N, "evaluate and write a checkpoint every N steps"),
    (_EVAL, "--eval-examples", "eval_examples", _N, "held-out examples of the final evaluation"),
    (_EVAL, "--beam-size", "beam_size", _N, "beam size of the final evaluation"),
    (_EVAL, "--patience", "patience", {"type": _int_at_least(0), "metavar": "N"},
     "stop after N evaluations without a better validation loss; 0 = never"),
)


@contextlib.contextmanager
def _blas_threads(n):
    """Limit BLAS (OpenBLAS, MKL) to ``n`` threads inside, through threadpoolctl when it is
    installed. The matrices of these models are small: one thread per process is about as fast,
    and far faster when other processes keep the cores busy (idle BLAS threads spin)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if not any(name in os.environ for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
            print("nptransformer: note: without threadpoolctl, --threads cannot limit the BLAS threads, and on a "
                  "busy machine spinning BLAS threads slow training several times over; `pip install "
                  "threadpoolctl` or set OPENBLAS_NUM_THREADS=1", file=sys.stderr)
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _train(args, parser) -> int:
    given = [(flag, dest) for _, flag, dest, _, _ in _RUN_SETTINGS if getattr(args, dest) is not None]
    progress = not args.no_progress
    if args.resume:
        if given or args.out:
            flags = ", ".join([flag for flag, _ in given] + (["--out"] if args.out else []))
            parser.error(f"--resume continues a run with its saved settings in its own directory; drop {flags} "
                         "(only --steps, --device, --threads and --no-progress go with --resume)")
        trainer = Trainer.resume(args.resume, steps=args.steps, device=args.device, progress=progress)
    else:
        try:
            config = TrainConfig(steps=args.steps, **{dest: getattr(args, dest) for _, dest in given})
        except ConfigError as err:
            parser.error(str(err))
        trainer = Trainer(config, args.out or default_out_dir(config.task), device=args.device, progress=progress)
    try:
        with _blas_threads(args.threads):
            trainer.train()
    except KeyboardInterrupt:
        if trainer.saved_step:
            saved = (f"its last checkpoint (step {trainer.saved_step}) is in {trainer.out_dir}; "
                     f"`nptransformer train --resume {trainer.out_dir}` continues from there")
        else:
            saved = "no checkpoint was written yet"
        print(f"nptransformer: interrupted at step {trainer.step}; {saved}", file=sys.stderr)
        return 130
    return 0


def _add_train_parser(sub):
    defaults = TrainConfig()
    steps = ", ".join(f"{task} {n}" for task, n in DEFAULT_STEPS.items())
    p = sub.add_parser(
        "train", help="train a Transformer on a generated task, or a GPT on a text file",
        description="Train an encoder-decoder Transformer on a generated task (default: normalizing dates "
                    "such as 'the 5th of march, 2021' to 2021-03-05), or a GPT on a text file (--task lm). "
                    "Writes the checkpoint, metrics.json (exact match, the loss of every step, ...), loss.png "
                    "and attention.png into --out, and prints held-out examples.",
        epilog="With --resume DIR, the run in DIR continues from its last checkpoint with its own settings, "
               "bit for bit as if it had never stopped, up to --steps.",
    )
    groups = {name: p.add_argument_group(name) for name in (_RUN, _LM, _MODEL, _EVAL)}
    for group, flag, dest, options, text in _RUN_SETTINGS:
        default = getattr(defaults, dest)
        groups[group].add_argument(flag, dest=dest, **options, help=text if default is None else f"{text} (default {default})")
    run = groups[_RUN]
    run.add_argument("--steps", **_N, help=f"training steps (default per task: {steps})")
    run.add_argument("--out", metavar="DIR", help="directory to write the run into (default runs/<task>-<time>)")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR up to --steps")
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    run.add_argument("--threads", **_N, default=1, help="BLAS threads, applied when threadpoolctl is installed (default 1)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_train, command_parser=p)


# --------------------------------------------------------------------------- generate
def _generate(args, parser) -> int:
    sampling = [flag for flag, value in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                         ("--top-p", args.top_p)) if value is not None]
    if sampling and args.beam_size is not None:
        parser.error(f"--beam-size (beam search) cannot go with {', '.join(sampling)} (sampling)")
    if not args.prompt:
        parser.error("--prompt is empty")
    text = generate(args.checkpoint, args.prompt, beam_size=args.beam_size, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
                    device=args.device)
    print(text)
    return 0


def _add_generate_parser(sub):
    p = sub.add_parser(
        "generate", help="translate or continue a prompt with a trained model",
        description="Run a trained model on --prompt: an encoder-decoder run translates it (beam search with "
                    "the run's beam size by default), a GPT run continues it (sampling at temperature 1 by "
                    "default). Give --beam-size for beam search, or --temperature/--top-k/--top-p to sample.",
    )
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="a run directory (or one of its checkpoints)")
    p.add_argument("--prompt", metavar="TEXT", required=True, help="the text to translate or continue")
    p.add_argument("--beam-size", type=_int_at_least(1), metavar="K", help="beam search with K beams")
    p.add_argument("--temperature", type=_float_in(0, float("inf"), low_open=True), metavar="T", help="sample at temperature T")
    p.add_argument("--top-k", type=_int_at_least(0), metavar="K", help="sample from the K most likely tokens only (0 = all)")
    p.add_argument("--top-p", type=_float_in(0, 1, low_open=True, high_open=False), metavar="P",
                   help="sample from the smallest set of tokens with probability >= P")
    p.add_argument("--max-new-tokens", type=_int_at_least(1), metavar="N", help="write at most N tokens")
    p.add_argument("--seed", type=_int_at_least(0), metavar="N", help="seed for sampling")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.set_defaults(run=_generate, command_parser=p)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nptransformer",
        description="The Transformer from a tiny autograd engine in pure NumPy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train_parser(sub)
    _add_generate_parser(sub)
    bench = sub.add_parser("bench", help="time a GPT training step, forward and decoding against PyTorch",
                           description=_bench.__doc__.split("\n\n")[0])
    _bench.add_arguments(bench)
    bench.set_defaults(run=lambda args, parser: _bench.run_from_args(args), command_parser=bench)
    demo = sub.add_parser("demo", help="back-propagate through a small function and gradcheck it")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo, command_parser=demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, args.command_parser)
    except _RUNTIME_ERRORS as err:
        message = " ".join(str(err).split())  # one line, whatever the message
        print(f"nptransformer: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nptransformer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
