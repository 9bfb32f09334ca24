"""Optimizers, learning-rate schedules and gradient clipping, with torch.optim's semantics.

A training step, in the order the calls go::

    loss.backward()                                  # fills p.grad for every parameter
    clip_grad_norm_(model.parameters(), 1.0)         # optional: rescale all gradients together
    optimizer.step()                                 # update every p.data in place
    scheduler.step()                                 # set the lr for the next step
    optimizer.zero_grad()                            # p.grad = None, ready for the next backward

The update rules (``g`` is ``p.grad``, ``t`` the step count from 1, ``lr`` the group's lr):

    SGD     g <- g + wd * p                                   (L2, only when wd != 0)
            b <- g at the first step, then mu * b + (1 - dampening) * g
            g <- g + mu * b  (nesterov)   or   g <- b        (only when momentum mu != 0)
            p <- p - lr * g
    Adam    g <- g + wd * p                                   (L2: decay goes through m and v)
            m <- beta1 * m + (1 - beta1) * g                  (first moment)
            v <- beta2 * v + (1 - beta2) * g * g              (second moment)
            (amsgrad: v_max <- max(v_max, v), used in place of v below)
            p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    AdamW   p <- p * (1 - lr * wd), then the Adam update with no L2 term (decoupled decay)

These are exactly the formulas of torch.optim (2.x), operation for operation, so the same
parameters and gradients give the same trajectory (tests/test_optim.py checks 20 steps against
torch within 1e-10 in float64). Every update works in place on ``p.data`` with the parameter's
own array module, so it runs on CuPy unchanged, float32 stays float32, and an update allocates
few temporaries: Adam one array the size of the parameter (two with L2 decay), SGD one to three.
"""
from __future__ import annotations

import math

import numpy

from .autograd import Tensor
from .backend import device_of, get_array_module, to_device

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "LRScheduler",
    "NoamSchedule",
    "WarmupCosine",
    "noam_lr",
    "warmup_cosine_lr",
    "clip_grad_norm_",
]


def _is_real_number(value) -> bool:
    return isinstance(value, (int, float, numpy.integer, numpy.floating)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- Optimizer
class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``, ``step``, ``state_dict``.

    ``params`` is an iterable of Tensors, or of dicts ``{"params": [...], "lr": ..., ...}`` (one
    per parameter group, e.g. a frozen body and a new head with their own lr); keys a group
    leaves out take the optimizer's defaults. ``optimizer.param_groups[i]["lr"]`` can be read
    and written at any time: that is how schedules work.

    ``step()`` skips parameters whose ``.grad`` is None and parameters with
    ``requires_grad=False`` (frozen), even if they still hold an old gradient (torch would update
    a frozen tensor that has a ``.grad``). ``optimizer.state[p]`` is parameter ``p``'s state, a
    dict made at its first update.

    A subclass sets ``state_keys`` (the names its per-parameter state may hold; the ones in
    ``scalar_state_keys`` are Python ints, the others arrays shaped like the parameter) and
    implements ``_check_hyperparameters(values, where)`` and ``_update(param, grad, group, state)``.
    """

    state_keys: tuple = ()
    scalar_state_keys: tuple = ()

    def __init__(self, params, defaults: dict):
        self._check_hyperparameters(defaults, "")
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}  # parameter Tensor -> {name: array or int}
        if isinstance(params, (Tensor, dict, set, frozenset)) or not hasattr(params, "__iter__"):
            self._fail(
                "",
                "params must be a list (or another ordered iterable) of Tensors or of param-group "
                f"dicts, got a {type(params).__name__}",
            )
        params = list(params)
        if not params:
            self._fail("", "got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def _name(self) -> str:
        return type(self).__name__

    def _check_hyperparameters(self, values: dict, where: str):
        raise NotImplementedError

    def _update(self, param, grad, group: dict, state: dict):
        raise NotImplementedError

    def _fail(self, where: str, message: str):
        raise ValueError(f"{self._name()}: {where}{message}")

    def add_param_group(self, param_group: dict):
        """Add a group ``{"params": [...], **hyperparameters}``; missing keys take the defaults."""
        where = f"param group {len(self.param_groups)}: "
        if not isinstance(param_group, dict) or "params" not in param_group:
            self._fail(where, f"a param group must be a dict with a 'params' key, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            self._fail(where, "params must be an ordered sequence (a list), not a set: the order numbers the state")
        else:
            params = list(params)
        if not params:
            self._fail(where, "the group has no parameters")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                self._fail(where, f"parameter {i} is a {type(p).__name__}, not a Tensor; an optimizer updates Tensors")
            if id(p) in seen:
                self._fail(where, f"parameter {i} (shape {p.shape}) is given twice; each parameter may appear only once")
            seen.add(id(p))
        group = {**self.defaults, **param_group, "params": params}
        self._check_hyperparameters(group, where)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True):
        """Clear every gradient: ``p.grad = None`` (default), or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.fill(0)

    def step(self):
        """Update every trainable parameter that has a gradient, in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                self._update(p, p.grad, group, self.state.setdefault(p, {}))

    # ---- checkpoints
    def state_dict(self) -> dict:
        """A snapshot of the optimizer: only arrays and plain Python values (no pickling needed).

        Layout (parameters are numbered 0, 1, 2, ... through the groups in order)::

            {
              "state": {                      # only parameters that have taken a step
                0: {"step": 10, "exp_avg": <array>, "exp_avg_sq": <array>},   # Adam / AdamW
                1: {"momentum_buffer": <array>},                              # SGD with momentum
              },
              "param_groups": [
                {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.0,
                 "amsgrad": False, "params": [0, 1]},
              ],
            }

        The arrays are copies (on the parameters' device), so stepping on afterwards does not
        change a state dict already taken. Everything but the arrays fits in JSON; the integer
        keys of "state" may come back as strings, and tuples as lists: ``load_state_dict``
        accepts both.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            numbers = []
            for p in group["params"]:
                index[id(p)] = len(index)
                numbers.append(index[id(p)])
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = numbers
            groups.append(saved)
        state = {}
        for p, entry in self.state.items():
            if entry:
                state[index[id(p)]] = {k: (v if k in self.scalar_state_keys else v.copy()) for k, v in entry.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Restore a ``state_dict()``: the same groups with the same numbers of parameters.

        Arrays are copied onto each parameter's device and dtype (a NumPy array from a
        checkpoint file can resume a CuPy run). Nothing changes unless all of it loads.
        """
        name = self._name()
        saved_groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if saved_groups is None or "state" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state dict has {len(saved_groups)} param group(s), "
                f"this optimizer has {len(self.param_groups)}"
            )
        by_number = {}
        new_groups = []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: param group {i} has {len(saved['params'])} parameter(s) "
                    f"in the state dict and {len(group['params'])} here"
                )
            by_number.update({int(n): p for n, p in zip(saved["params"], group["params"])})
            values = {
                k: tuple(v) if isinstance(self.defaults.get(k), tuple) else v for k, v in saved.items() if k != "params"
            }
            self._check_hyperparameters({**group, **values}, f"load_state_dict: param group {i}: ")
            new_groups.append(values)
        new_state = {}
        for number, entry in state_dict["state"].items():
            p = by_number.get(int(number))
            if p is None:
                raise ValueError(f"{name}.load_state_dict: state for parameter {number}, which no param group lists")
            new_state[p] = {k: self._load_state_value(k, v, p, number) for k, v in entry.items()}
        for group, values in zip(self.param_groups, new_groups):
            group.update(values)
        self.state = new_state

    def _load_state_value(self, key, value, p, number):
        if key not in self.state_keys:
            raise ValueError(
                f"{self._name()}.load_state_dict: parameter {number} has state {key!r}; "
                f"{self._name()} keeps only {list(self.state_keys)}"
            )
        if key in self.scalar_state_keys:
            return int(value)
        if not hasattr(value, "shape"):
            value = numpy.asarray(value)  # nested lists, e.g. from JSON
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(
                f"{self._name()}.load_state_dict: state {key!r} of parameter {number} has shape "
                f"{tuple(value.shape)}, but the parameter has shape {tuple(p.shape)}"
            )
        xp = get_array_module(p.data)
        if get_array_module(value) is not xp and device_of(value) == "cuda":
            value = to_device(value, "cpu")
        return xp.array(value, dtype=p.dtype, copy=True)  # own the buffer, on p's device and dtype

    def __repr__(self):
        lines = [f"{self._name()} ("]
        for i, group in enumerate(self.param_groups):
            settings = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} params, {settings}")
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

        g <- g + weight_decay * p
        b <- g (first step), then b <- momentum * b + (1 - dampening) * g
        g <- g + momentum * b (nesterov) or g <- b
        p <- p - lr * g

    The momentum buffer ``b`` starts as the first gradient itself, as in torch.optim.SGD (no
    dampening on the first step). Nesterov needs momentum > 0 and dampening = 0.
    """

    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, values, where):
        for key in ("lr", "momentum", "dampening", "weight_decay"):
            if not _is_real_number(values[key]) or not values[key] >= 0:
                self._fail(where, f"{key} must be a number >= 0, got {values[key]!r}")
        if values["nesterov"] and (values["momentum"] <= 0 or values["dampening"] != 0):
            self._fail(
                where,
                f"nesterov momentum needs momentum > 0 and dampening = 0, got momentum="
                f"{values['momentum']} and dampening={values['dampening']}",
            )

    def _update(self, param, grad, group, state):
        p = param.data
        xp = get_array_module(p, grad)
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
        if weight_decay != 0:
            decayed = xp.multiply(p, weight_decay)  # g + wd * p in a new array: p.grad stays as it is
            decayed += grad
            grad = decayed
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += grad if dampening == 0 else (1 - dampening) * grad
            if group["nesterov"]:
                direction = xp.multiply(buf, momentum)  # g + momentum * b
                direction += grad
            else:
                direction = buf
        else:
            direction = grad
        p -= lr * direction


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with torch.optim.Adam's bias corrections and L2 weight decay.

        g <- g + weight_decay * p
        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``t`` counts this parameter's steps from 1. The bias corrections undo the pull of m and v
    towards their zero start: after one step m = (1 - beta1) g, and dividing by 1 - beta1^1
    gives g back. ``eps`` is added after the correction of sqrt(v), as torch does it.
    ``amsgrad=True`` divides by the running maximum of v instead of v.

    With ``weight_decay`` the decay term goes through m and v (coupled L2, the Adam of the
    paper and of torch.optim.Adam); :class:`AdamW` decouples it.
    """

    state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    scalar_state_keys = ("step",)
    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, values, where):
        for key in ("lr", "eps", "weight_decay"):
            if not _is_real_number(values[key]) or not values[key] >= 0:
                self._fail(where, f"{key} must be a number >= 0, got {values[key]!r}")
        betas = values["betas"]
        if not (
            isinstance(betas, (tuple, list))
            and len(betas) == 2
            and all(_is_real_number(b) and 0 <= b < 1 for b in betas)
        ):
            self._fail(where, f"betas must be two numbers in [0, 1), got {betas!r}")

    def _update(self, param, grad, group, state):
        p = param.data
        xp = get_array_module(p, grad)
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = xp.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]

        if weight_decay != 0:
            if self.decoupled_weight_decay:
                p *= 1 - lr * weight_decay  # AdamW: shrink p itself; m and v never see the decay
            else:
                decayed = xp.multiply(p, weight_decay)  # Adam: g + wd * p in a new array
                decayed += grad
                grad = decayed

        tmp = xp.empty_like(p)  # the one scratch array of this update, reused line by line
        xp.subtract(grad, m, out=tmp)  # m + (1 - beta1)(g - m) = beta1 m + (1 - beta1) g (torch's lerp_)
        tmp *= 1 - beta1
        m += tmp
        xp.multiply(grad, grad, out=tmp)  # v <- beta2 v + (1 - beta2) g^2
        tmp *= 1 - beta2
        v *= beta2
        v += tmp
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])

        step_size = lr / (1 - beta1**t)
        xp.sqrt(v, out=tmp)  # denominator: sqrt(v) / sqrt(1 - beta2^t) + eps
        tmp /= (1 - beta2**t) ** 0.5
        tmp += eps
        xp.divide(m, tmp, out=tmp)
        tmp *= -step_size
        p += tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as torch.optim.AdamW.

        p <- p * (1 - lr * weight_decay)        then the Adam update with no L2 term

    In Adam's L2 form the decay is divided by sqrt(v) like the gradient, so parameters with
    large gradients are barely decayed; here every weight shrinks by the same factor. The
    default ``weight_decay`` is 0.01, as in torch.
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


# --------------------------------------------------------------------------- schedules
def _check_schedule(who, **values):
    for key, value in values.items():
        if not _is_real_number(value) or not value >= 0:
            raise ValueError(f"{who}: {key} must be a number >= 0, got {value!r}")


def noam_lr(step, d_model, warmup, factor=1.0) -> float:
    """The Transformer paper's rate: ``factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``.

    ``step`` counts from 1. The two terms are equal at step == warmup: before it the rate rises
    linearly (``step * warmup^-1.5``), after it decays like ``step^-0.5``; the peak is
    ``factor / sqrt(d_model * warmup)``. (d_model=512, warmup=4000: 6.988e-4 at step 4000, and
    half that at step 16000.)
    """
    _check_schedule("noam_lr", factor=factor)
    if not (_is_real_number(d_model) and d_model > 0 and _is_real_number(warmup) and warmup > 0):
        raise ValueError(f"noam_lr: d_model and warmup must be numbers > 0, got {d_model!r} and {warmup!r}")
    if not (_is_real_number(step) and step >= 1):
        raise ValueError(f"noam_lr: step counts from 1, got {step!r}")
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def warmup_cosine_lr(step, base_lr, warmup_steps, total_steps, min_lr=0.0) -> float:
    """Linear warm-up from 0 to ``base_lr``, then a half cosine down to ``min_lr``.

        step <= warmup_steps:             base_lr * step / warmup_steps
        warmup_steps < step < total_steps: min_lr + (base_lr - min_lr) * (1 + cos(pi * s)) / 2,
                                           s = (step - warmup_steps) / (total_steps - warmup_steps)
        step >= total_steps:              min_lr

    So lr(0) = 0, lr(warmup_steps) = base_lr, lr(total_steps) = min_lr, and half-way through
    the decay lr = (base_lr + min_lr) / 2.
    """
    who = "warmup_cosine_lr"
    _check_schedule(who, step=step, base_lr=base_lr, warmup_steps=warmup_steps, min_lr=min_lr)
    if not (_is_real_number(total_steps) and total_steps > 0 and warmup_steps <= total_steps):
        raise ValueError(
            f"{who}: need 0 < total_steps and warmup_steps <= total_steps, got "
            f"warmup_steps={warmup_steps!r}, total_steps={total_steps!r}"
        )
    if warmup_steps > 0 and step <= warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    s = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * s)) / 2


class LRScheduler:
    """Sets every param group's lr from the step number, in torch's protocol.

    Made after the optimizer, it records each group's lr as ``base_lrs`` and at once sets the lr
    of the first optimizer step. Call ``scheduler.step()`` after each ``optimizer.step()``: the
    k-th ``optimizer.step()`` (k counted from 1) then runs with ``lr_at(k, base_lr)``.
    ``step_num`` is that k for the lr now in the groups (torch's ``last_epoch`` is k - 1).
    A subclass implements ``lr_at(step, base_lr)``.
    """

    def __init__(self, optimizer):
        if not hasattr(optimizer, "param_groups"):
            raise ValueError(f"{type(self).__name__}: expected an optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.step_num = 1
        self._set_lrs()

    def lr_at(self, step: int, base_lr: float) -> float:
        raise NotImplementedError

    def step(self):
        """Move on to the next optimizer step and write its lr into every group."""
        self.step_num += 1
        self._set_lrs()

    def get_last_lr(self) -> list:
        """The lr this scheduler last wrote into each group."""
        return list(self.last_lr)

    def _set_lrs(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(
                f"{type(self).__name__}: the optimizer has {len(groups)} param group(s) but the "
                f"scheduler was made for {len(self.base_lrs)}; make the scheduler after adding groups"
            )
        self.last_lr = [self.lr_at(self.step_num, base) for base in self.base_lrs]
        for group, lr in zip(groups, self.last_lr):
            group["lr"] = lr

    def state_dict(self) -> dict:
        """Plain Python values: ``step_num``, ``base_lrs``, ``last_lr`` and the schedule's settings."""
        return {k: list(v) if isinstance(v, list) else v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict):
        """Restore a ``state_dict()`` and write the restored step's lr into the groups."""
        unknown = set(state_dict) - set(self.state_dict())
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown keys {sorted(unknown)}")
        self.__dict__.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in state_dict.items()})
        self._set_lrs()


class NoamSchedule(LRScheduler):
    """The Transformer paper's warm-up: every group's lr is ``noam_lr(step, d_model, warmup, factor)``.

    The value is absolute: it replaces the optimizer's own lr (``factor`` plays the role of a
    base lr), and every group gets the same lr. The first optimizer step runs with
    ``noam_lr(1, ...)`` (set when the scheduler is made), the k-th with ``noam_lr(k, ...)``.
    """

    def __init__(self, optimizer, d_model, warmup, factor=1.0):
        noam_lr(1, d_model, warmup, factor)  # check the settings before touching the optimizer
        self.d_model, self.warmup, self.factor = d_model, warmup, factor
        super().__init__(optimizer)

    def lr_at(self, step, base_lr):
        return noam_lr(step, self.d_model, self.warmup, self.factor)


class WarmupCosine(LRScheduler):
    """Linear warm-up to each group's own lr, then cosine decay to ``min_lr`` (``warmup_cosine_lr``).

    The k-th optimizer step runs with ``warmup_cosine_lr(k, base_lr, ...)``: the first step gets
    ``base_lr / warmup_steps``, step ``warmup_steps`` the full ``base_lr``, and step
    ``total_steps`` (and any after it) ``min_lr``. Groups keep their ratios during warm-up and
    decay; ``min_lr`` is the same for all of them, as ``eta_min`` in torch's cosine schedule.
    """

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr=0.0):
        warmup_cosine_lr(1, 1.0, warmup_steps, total_steps, min_lr)  # check the settings first
        self.warmup_steps, self.total_steps, self.min_lr = warmup_steps, total_steps, min_lr
        super().__init__(optimizer)

    def lr_at(self, step, base_lr):
        return warmup_cosine_lr(step, base_lr, self.warmup_steps, self.total_steps, self.min_lr)


# --------------------------------------------------------------------------- clipping
def clip_grad_norm_(parameters, max_norm, eps=1e-6, error_if_nonfinite=False) -> float:
    """Rescale all gradients together so that their global L2 norm is at most ``max_norm``.

    The global norm treats every gradient as one long vector: ``total = sqrt(sum_i |g_i|^2)``,
    computed, as torch does, as the norm of the per-tensor norms. Every gradient is then
    multiplied in place by ``min(max_norm / (total + eps), 1)``, which keeps the direction of
    the update and only shortens it. Parameters without a gradient are skipped. Returns
    ``total`` (before clipping) as a Python float: worth logging, a spike means trouble.

    A non-finite total behaves exactly as in torch.nn.utils.clip_grad_norm_ (by default): an
    infinite norm gives the factor 0, so finite gradients become 0 and infinite ones NaN; a NaN
    norm makes every gradient NaN. The step after that would write NaN into the parameters, so
    check ``math.isfinite`` of the result and skip the step, or pass
    ``error_if_nonfinite=True`` to raise instead (nothing is changed then).
    """
    if not (_is_real_number(max_norm) and max_norm >= 0):
        raise ValueError(f"clip_grad_norm_: max_norm must be a number >= 0, got {max_norm!r}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    xp = get_array_module(*grads)
    norms = xp.stack([xp.linalg.norm(g.reshape(-1)) for g in grads])  # one norm per tensor
    total = float(xp.linalg.norm(norms))  # the one device-to-host transfer
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total gradient norm is {total}, so it cannot be clipped; "
            "pass error_if_nonfinite=False to scale by it anyway"
        )
    coef = max_norm / (total + eps)
    if coef < 1.0 or math.isnan(coef):  # torch.clamp(coef, max=1) lets NaN through
        with numpy.errstate(invalid="ignore"):  # inf * 0 = NaN is torch's result too
            for g in grads:
                g *= coef
    return total
