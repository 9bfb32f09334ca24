"""The ``nptransformer`` command line (also ``python -m nptransformer``)."""
from __future__ import annotations

import argparse
import sys

import numpy as np


def _demo(args) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nptransformer",
        description="The Transformer from a tiny autograd engine in pure NumPy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = sub.add_parser("demo", help="back-propagate through a small function and gradcheck it")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
