"""nptransformer.optim: optimizers, schedules and clipping against torch.optim, hand numbers and
the update rules written out plainly.

The trajectory tests drive three implementations with the same float64 parameters and the same
20 gradients: ours (on every backend), torch.optim (when installed) and ``_reference_run``, the
documented update rules in the plainest NumPy, so the semantics are checked without torch too.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nptransformer import DeviceError, Tensor
from nptransformer.backend import to_device
from nptransformer.optim import (
    SGD,
    Adam,
    AdamW,
    NoamSchedule,
    WarmupCosine,
    clip_grad_norm_,
    noam_lr,
    warmup_cosine_lr,
)

OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05)),
    ("SGD", dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]
CONFIG_IDS = [f"{kind}-{'-'.join(f'{k}={v}' for k, v in cfg.items())}" for kind, cfg in CONFIGS]

SHAPES = {"body": [(4, 3), (3,)], "head": [(3, 2)], "frozen": [(2, 2)]}
HEAD = {"lr": 0.05, "weight_decay": 0.0}  # the head's own settings; the body takes the defaults
STEPS = 20
SKIPPED_HEAD_STEP = 7  # the head gets no gradient at this step: it must not move, nor count a step


def _problem():
    """Initial parameters and the gradient sequence, the same for every implementation.

    The gradients shrink tenfold after step 5, so v falls and amsgrad's running max matters.
    """
    rng = np.random.default_rng(5)
    init = {g: [rng.standard_normal(s) for s in shapes] for g, shapes in SHAPES.items()}
    grads = []
    for step in range(STEPS):
        scale = 3.0 if step < 5 else 0.3
        grads.append({g: [scale * rng.standard_normal(s) for s in shapes] for g, shapes in SHAPES.items()})
        if step == SKIPPED_HEAD_STEP:
            grads[-1]["head"] = [None]
    return init, grads


def _group_dicts(params):
    return [{"params": params["body"]}, {"params": params["head"], **HEAD}, {"params": params["frozen"], "lr": 1.0}]


def _flat(params, to_numpy):
    return [to_numpy(p) for g in SHAPES for p in params[g]]


def _our_run(xp, kind, cfg, init, grads, start=0, stop=STEPS, optimizer_state=None):
    """Our optimizer over steps [start, stop); returns every step's parameters as NumPy arrays."""
    params = {
        g: [Tensor(xp.asarray(a.copy()), requires_grad=g != "frozen") for a in arrays] for g, arrays in init.items()
    }
    opt = OPTIMIZERS[kind](_group_dicts(params), **cfg)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    history = []
    for step in range(start, stop):
        for g, arrays in grads[step].items():
            for p, a in zip(params[g], arrays):
                p.grad = None if a is None else xp.asarray(a.copy())
        opt.step()
        history.append(_flat(params, lambda p: np.array(p.numpy())))  # copies: p.data is updated in place
    return history, opt, params


def _torch_run(torch, kind, cfg, init, grads):
    params = {
        g: [torch.tensor(a, dtype=torch.float64, requires_grad=g != "frozen") for a in arrays]
        for g, arrays in init.items()
    }
    opt = getattr(torch.optim, kind)(_group_dicts(params), **cfg)
    history = []
    for step in range(STEPS):
        for g, arrays in grads[step].items():
            if g == "frozen":
                continue  # torch updates any tensor that has a .grad; frozen ones simply have none
            for p, a in zip(params[g], arrays):
                p.grad = None if a is None else torch.tensor(a)
        opt.step()
        history.append(_flat(params, lambda p: p.detach().numpy().copy()))
    return history


def _reference_run(kind, cfg, init, grads):
    """The update rules as torch.optim's documentation writes them, one parameter at a time."""
    defaults = {
        "SGD": dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
        "Adam": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False),
        "AdamW": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False),
    }[kind]
    params = {g: [a.copy() for a in arrays] for g, arrays in init.items()}
    settings = {"body": {**defaults, **cfg}, "head": {**defaults, **cfg, **HEAD}}
    state = {}
    history = []
    for step in range(STEPS):
        for g in ("body", "head"):
            h = settings[g]
            for i, (p, grad) in enumerate(zip(params[g], grads[step][g])):
                if grad is None:
                    continue
                s = state.setdefault((g, i), {"t": 0, "b": None, "m": 0.0, "v": 0.0, "vmax": 0.0})
                lr, wd = h["lr"], h["weight_decay"]
                if kind == "SGD":
                    grad = grad + wd * p
                    if h["momentum"]:
                        mu = h["momentum"]
                        s["b"] = grad if s["b"] is None else mu * s["b"] + (1 - h["dampening"]) * grad
                        grad = grad + mu * s["b"] if h["nesterov"] else s["b"]
                    p -= lr * grad
                    continue
                (b1, b2), eps = h["betas"], h["eps"]
                s["t"] += 1
                if kind == "AdamW":
                    p *= 1 - lr * wd
                else:
                    grad = grad + wd * p
                s["m"] = b1 * s["m"] + (1 - b1) * grad
                s["v"] = b2 * s["v"] + (1 - b2) * grad**2
                m_hat = s["m"] / (1 - b1 ** s["t"])
                s["vmax"] = np.maximum(s["vmax"], s["v"]) if h["amsgrad"] else s["v"]
                v_hat = s["vmax"] / (1 - b2 ** s["t"])
                p -= lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append(_flat(params, np.copy))
    return history


def _assert_histories_close(ours, theirs, atol):
    for step, (a_params, b_params) in enumerate(zip(ours, theirs), start=1):
        for i, (a, b) in enumerate(zip(a_params, b_params)):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f"step {step}, parameter {i}")


# --------------------------------------------------------------------------- trajectories
@pytest.mark.torch
@pytest.mark.parametrize("kind, cfg", CONFIGS, ids=CONFIG_IDS)
def test_twenty_steps_match_torch(xp, torch, kind, cfg):
    init, grads = _problem()
    ours, _, _ = _our_run(xp, kind, cfg, init, grads)
    _assert_histories_close(ours, _torch_run(torch, kind, cfg, init, grads), atol=1e-10)


@pytest.mark.parametrize("kind, cfg", CONFIGS, ids=CONFIG_IDS)
def test_twenty_steps_match_the_written_update_rules(xp, kind, cfg):
    init, grads = _problem()
    ours, _, params = _our_run(xp, kind, cfg, init, grads)
    _assert_histories_close(ours, _reference_run(kind, cfg, init, grads), atol=1e-10)
    for p, a in zip(params["frozen"], init["frozen"]):  # frozen: held a gradient, never moved
        np.testing.assert_array_equal(p.numpy(), a)
    assert ours[SKIPPED_HEAD_STEP][2].tolist() == ours[SKIPPED_HEAD_STEP - 1][2].tolist()


def test_amsgrad_changes_the_trajectory():
    """Else the amsgrad cases above could not tell amsgrad from plain Adam at 1e-10."""
    init, grads = _problem()
    plain = _reference_run("Adam", dict(lr=0.01), init, grads)[-1]
    ams = _reference_run("Adam", dict(lr=0.01, amsgrad=True), init, grads)[-1]
    assert max(np.abs(a - b).max() for a, b in zip(plain, ams)) > 1e-6


def test_sgd_momentum_by_hand(xp):
    p = Tensor(xp.asarray(np.array([1.0, -2.0])), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = xp.asarray(np.array([0.5, 1.0]))
    opt.step()  # b = g = [0.5, 1]; p = [1 - 0.05, -2 - 0.1]
    np.testing.assert_allclose(p.numpy(), [0.95, -2.1], rtol=0, atol=1e-15)
    p.grad = xp.asarray(np.array([1.0, 0.0]))
    opt.step()  # b = 0.9 [0.5, 1] + [1, 0] = [1.45, 0.9]; p -= 0.1 b
    np.testing.assert_allclose(p.numpy(), [0.95 - 0.145, -2.1 - 0.09], rtol=0, atol=1e-15)


def test_adam_first_step_is_lr_times_sign(xp):
    """After one step m/(1 - beta1) = g and sqrt(v/(1 - beta2)) = |g|: p moves by lr * g / (|g| + eps)."""
    g = np.array([3.0, -0.02, 1e-3])
    p = Tensor(xp.asarray(np.zeros(3)), requires_grad=True)
    opt = Adam([p], lr=0.1)
    p.grad = xp.asarray(g)
    opt.step()
    np.testing.assert_allclose(p.numpy(), -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    assert opt.state[p]["step"] == 1


def test_adamw_decay_is_decoupled(xp):
    """With a zero gradient Adam's update is 0, so AdamW only shrinks p by (1 - lr * wd)."""
    p = Tensor(xp.asarray(np.array([2.0, -4.0])), requires_grad=True)
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = xp.asarray(np.zeros(2))
    opt.step()
    np.testing.assert_allclose(p.numpy(), [2.0 * 0.95, -4.0 * 0.95], rtol=1e-15)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_float32_stays_float32_and_grads_are_untouched(xp, kind):
    rng = np.random.default_rng(1)
    p = Tensor(xp.asarray(rng.standard_normal((3, 4)).astype(np.float32)), requires_grad=True)
    data = p.data
    g = rng.standard_normal((3, 4)).astype(np.float32)
    opt = OPTIMIZERS[kind]([p], lr=0.01, weight_decay=0.1, **({"momentum": 0.9} if kind == "SGD" else {}))
    for _ in range(3):
        p.grad = xp.asarray(g.copy())
        opt.step()
        np.testing.assert_array_equal(p.grad.tolist(), g)
    assert p.data is data and p.dtype == np.float32  # updated in place
    assert all(v.dtype == np.float32 for v in opt.state[p].values() if hasattr(v, "dtype"))


def test_zero_grad(xp):
    a = Tensor(xp.asarray(np.ones(2)), requires_grad=True)
    b = Tensor(xp.asarray(np.ones(3)), requires_grad=True)
    opt = SGD([a, b], lr=0.1)
    a.grad = xp.asarray(np.array([1.0, 2.0]))
    grad = a.grad
    opt.zero_grad(set_to_none=False)
    assert a.grad is grad and a.grad.tolist() == [0.0, 0.0] and b.grad is None
    opt.zero_grad()
    assert a.grad is None


def test_lr_is_writable_and_add_param_group_fills_defaults(xp):
    a = Tensor(xp.asarray(np.zeros(1)), requires_grad=True)
    b = Tensor(xp.asarray(np.zeros(1)), requires_grad=True)
    opt = SGD([a], lr=0.1, momentum=0.5)
    opt.add_param_group({"params": b, "lr": 1.0})
    assert opt.param_groups[1]["momentum"] == 0.5 and opt.param_groups[1]["params"] == [b]
    opt.param_groups[0]["lr"] = 0.25
    a.grad = xp.asarray(np.ones(1))
    b.grad = xp.asarray(np.ones(1))
    opt.step()
    assert a.numpy().tolist() == [-0.25] and b.numpy().tolist() == [-1.0]


def test_grad_on_another_device_is_an_error():
    from strict_xp import strict

    p = Tensor(strict.asarray(np.zeros(2)), requires_grad=True)
    p.grad = np.ones(2)
    with pytest.raises(DeviceError):
        Adam([p]).step()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: SGD([p], lr=-0.1), "SGD: lr must be a number >= 0"),
        (lambda p: Adam([p], lr=float("nan")), "Adam: lr must be"),
        (lambda p: Adam([p], betas=(0.9, 1.0)), r"Adam: betas must be two numbers in \[0, 1\)"),
        (lambda p: AdamW([p], betas=(-0.1, 0.9)), "AdamW: betas"),
        (lambda p: Adam([p], betas=0.9), "Adam: betas"),
        (lambda p: Adam([p], eps=-1e-8), "Adam: eps"),
        (lambda p: AdamW([p], weight_decay=-1), "AdamW: weight_decay"),
        (lambda p: SGD([p], momentum=0.0, nesterov=True), "SGD: nesterov momentum needs momentum > 0"),
        (lambda p: SGD([p, p]), "SGD: param group 0: parameter 1 .* is given twice"),
        (lambda p: Adam([{"params": [p]}, {"params": [p], "lr": 1.0}]), "Adam: param group 1: parameter 0"),
        (lambda p: Adam([p, np.zeros(2)]), "Adam: param group 0: parameter 1 is a ndarray, not a Tensor"),
        (lambda p: Adam([{"params": [p], "lr": -1.0}]), "Adam: param group 0: lr must be"),
        (lambda p: Adam(p), "Adam: params must be a list .* got a Tensor"),
        (lambda p: Adam([]), "Adam: got an empty parameter list"),
        (lambda p: Adam({p}), "Adam: params must be a list .* got a set"),
        (lambda p: Adam(3), "Adam: params must be a list .* got a int"),
        (lambda p: Adam([{"params": {p}}]), "Adam: param group 0: params must be an ordered sequence"),
    ],
)
def test_bad_input_is_a_clear_value_error(make, message):
    p = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match=message):
        make(p)


def test_trains_a_linear_regression_through_the_autograd(xp):
    """The whole loop: backward fills .grad, clip, step, schedule, zero_grad; it finds the weights."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 3))
    w_true = np.array([[1.5], [-2.0], [0.5]])
    inputs, targets = Tensor(xp.asarray(x)), Tensor(xp.asarray(x @ w_true))
    w = Tensor(xp.asarray(np.zeros((3, 1))), requires_grad=True)
    opt = AdamW([w], lr=0.1, weight_decay=0.0)
    sched = WarmupCosine(opt, warmup_steps=10, total_steps=300)
    for _ in range(300):
        opt.zero_grad()
        loss = ((inputs @ w - targets) ** 2).mean()
        loss.backward()
        clip_grad_norm_([w], 1.0)
        opt.step()
        sched.step()
    np.testing.assert_allclose(w.numpy(), w_true, atol=1e-4)


# --------------------------------------------------------------------------- state_dict
def _save_and_reload(state_dict):
    """What a checkpoint does: arrays to host NumPy (an .npz), everything else through JSON."""
    arrays = {}
    plain = {"state": {}, "param_groups": state_dict["param_groups"]}
    for number, entry in state_dict["state"].items():
        plain["state"][number] = {}
        for key, value in entry.items():
            if hasattr(value, "shape"):
                arrays[f"{number}.{key}"] = to_device(value, "cpu")
            else:
                plain["state"][number][key] = value
    loaded = json.loads(json.dumps(plain))
    for name, array in arrays.items():
        number, key = name.split(".")
        loaded["state"][number][key] = array
    return loaded


@pytest.mark.parametrize(
    "kind, cfg",
    [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)), ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01))],
)
def test_state_dict_round_trip_continues_identically(xp, kind, cfg):
    init, grads = _problem()
    straight, _, _ = _our_run(xp, kind, cfg, init, grads)
    _, opt, params = _our_run(xp, kind, cfg, init, grads, stop=10)
    saved = opt.state_dict()
    snapshot = _save_and_reload(saved)
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1], [2], [3]]
    assert sorted(saved["state"]) == [0, 1, 2]  # the frozen parameter 3 never took a step
    after_ten = {g: [p.numpy() for p in ps] for g, ps in params.items()}
    rest, _, _ = _our_run(xp, kind, cfg, after_ten, grads, start=10, optimizer_state=snapshot)
    for a, b in zip(straight[10:], rest):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # the state dict is a snapshot: the steps after it did not change it
    for p in params["body"]:
        p.grad = xp.asarray(np.ones(p.shape))
    before = {n: {k: np.array(to_device(v, "cpu")) for k, v in e.items()} for n, e in saved["state"].items()}
    opt.step()
    for n, entry in saved["state"].items():
        for k, v in entry.items():
            np.testing.assert_array_equal(to_device(v, "cpu"), before[n][k])


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    a = Tensor(np.zeros((2, 3)), requires_grad=True)
    b = Tensor(np.zeros(3), requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    a.grad, b.grad = np.ones((2, 3)), np.ones(3)
    opt.step()
    good = opt.state_dict()

    def variant(**changes):
        sd = opt.state_dict()
        sd.update(changes)
        return sd

    sgd = SGD([Tensor(np.zeros((2, 3)), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)], momentum=0.9)
    sgd.param_groups[0]["params"][0].grad = np.ones((2, 3))
    sgd.step()
    cases = [
        (variant(param_groups=good["param_groups"] * 2), "has 2 param group"),
        (variant(param_groups=[{**good["param_groups"][0], "params": [0]}]), "param group 0 has 1 parameter"),
        (variant(state={1: {**good["state"][0]}}), r"state 'exp_avg' of parameter 1 has shape \(2, 3\)"),
        (variant(state={7: good["state"][0]}), "parameter 7, which no param group lists"),
        (variant(param_groups=[{**good["param_groups"][0], "betas": [0.9, 2.0]}]), "betas"),
        ({**sgd.state_dict(), "param_groups": good["param_groups"]}, "Adam keeps only"),
        ({"state": {}}, "expected a dict with 'state' and 'param_groups'"),
    ]
    lr_before, state_before = opt.param_groups[0]["lr"], opt.state
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)
        assert opt.state is state_before and opt.param_groups[0]["lr"] == lr_before


def test_load_state_dict_restores_hyperparameters():
    p = Tensor(np.zeros(2), requires_grad=True)
    opt = Adam([p], lr=0.1, betas=(0.8, 0.9))
    saved = json.loads(json.dumps(opt.state_dict()))  # betas come back as a list
    fresh = Adam([Tensor(np.zeros(2), requires_grad=True)], lr=0.5)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == 0.1 and fresh.param_groups[0]["betas"] == (0.8, 0.9)


# --------------------------------------------------------------------------- schedules
def test_noam_lr_hand_numbers():
    peak = 1 / math.sqrt(512 * 4000)  # both terms meet at step == warmup
    assert noam_lr(4000, 512, 4000) == pytest.approx(6.987712429686844e-04, rel=1e-14)
    assert noam_lr(4000, 512, 4000) == pytest.approx(peak, rel=1e-14)
    assert noam_lr(16000, 512, 4000) == pytest.approx(peak / 2, rel=1e-14)  # step^-0.5: 4x steps, half
    assert noam_lr(1, 512, 4000) == pytest.approx(512**-0.5 * 4000**-1.5, rel=1e-14)
    assert noam_lr(2000, 512, 4000, factor=2.0) == pytest.approx(peak, rel=1e-14)  # half-way up, doubled
    with pytest.raises(ValueError, match="noam_lr: step counts from 1"):
        noam_lr(0, 512, 4000)
    with pytest.raises(ValueError, match="noam_lr: d_model and warmup"):
        noam_lr(1, 512, 0)


def test_warmup_cosine_endpoints():
    base, low = 3e-4, 1e-5
    lr = lambda step: warmup_cosine_lr(step, base, 10, 110, min_lr=low)  # noqa: E731
    assert lr(0) == 0.0 and lr(5) == base / 2 and lr(10) == base
    assert lr(60) == pytest.approx((base + low) / 2, rel=1e-14)  # half-way through the decay
    assert lr(110) == low and lr(500) == low
    assert all(lr(s) > lr(s + 1) for s in range(10, 110))  # strictly decreasing after warm-up
    assert warmup_cosine_lr(0, base, 0, 100) == pytest.approx(base, rel=1e-15)  # no warm-up
    assert warmup_cosine_lr(10, base, 10, 10) == base and warmup_cosine_lr(11, base, 10, 10) == 0.0
    with pytest.raises(ValueError, match="warmup_cosine_lr: need 0 < total_steps and warmup_steps <= total_steps"):
        warmup_cosine_lr(1, base, 20, 10)


def _lrs_over(optimizer, scheduler, steps):
    """The lr each optimizer step runs with, group by group."""
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return np.array(out)


@pytest.mark.torch
def test_noam_schedule_matches_torch_lambda_lr(torch):
    d_model, warmup, factor = 64, 10, 2.0
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=1.0)
    # torch counts the scheduler's epochs from 0; the k-th optimizer step is epoch k - 1
    tsched = torch.optim.lr_scheduler.LambdaLR(
        topt, lambda e: factor * d_model**-0.5 * min((e + 1) ** -0.5, (e + 1) * warmup**-1.5)
    )
    opt = SGD([Tensor(np.zeros(2), requires_grad=True)], lr=0.123)  # replaced by the schedule
    sched = NoamSchedule(opt, d_model, warmup, factor)
    ours = _lrs_over(opt, sched, 40)
    np.testing.assert_allclose(ours, _lrs_over(topt, tsched, 40), rtol=1e-14)
    assert ours[0, 0] == noam_lr(1, d_model, warmup, factor) and sched.get_last_lr() == tsched.get_last_lr()


@pytest.mark.torch
def test_warmup_cosine_matches_torch_lambda_lr(torch):
    warmup, total, low, bases = 5, 30, 1e-4, (1e-3, 1e-2)

    def factor(e, base):  # the formula, as a multiple of the group's base lr
        step = e + 1
        if step <= warmup:
            return step / warmup
        if step >= total:
            return low / base
        return (low + (base - low) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))) / base

    tparams = [torch.zeros(1, requires_grad=True) for _ in bases]
    topt = torch.optim.SGD([{"params": [p], "lr": b} for p, b in zip(tparams, bases)])
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, [lambda e, b=b: factor(e, b) for b in bases])
    opt = SGD([{"params": [Tensor(np.zeros(1), requires_grad=True)], "lr": b} for b in bases])
    sched = WarmupCosine(opt, warmup, total, min_lr=low)
    ours = _lrs_over(opt, sched, 40)
    np.testing.assert_allclose(ours, _lrs_over(topt, tsched, 40), rtol=1e-12)
    np.testing.assert_allclose(ours[0], [b / warmup for b in bases], rtol=1e-15)
    np.testing.assert_allclose(ours[warmup - 1], bases, rtol=1e-15)
    np.testing.assert_allclose(ours[total - 1:], low, rtol=1e-15)


def test_scheduler_state_dict_round_trip():
    def fresh():
        opt = Adam([Tensor(np.zeros(1), requires_grad=True)], lr=1e-3)
        return opt, WarmupCosine(opt, 5, 50, min_lr=1e-5)

    opt, sched = fresh()
    _lrs_over(opt, sched, 12)
    saved = json.loads(json.dumps(sched.state_dict()))
    assert saved["step_num"] == 13 and saved["base_lrs"] == [1e-3] and "optimizer" not in saved
    opt2, sched2 = fresh()
    sched2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == warmup_cosine_lr(13, 1e-3, 5, 50, 1e-5)
    np.testing.assert_array_equal(_lrs_over(opt, sched, 5), _lrs_over(opt2, sched2, 5))
    with pytest.raises(ValueError, match="WarmupCosine.load_state_dict: unknown keys"):
        sched2.load_state_dict({**saved, "d_model": 512})


def test_scheduler_notices_a_group_added_later():
    opt = SGD([Tensor(np.zeros(1), requires_grad=True)], lr=0.1)
    sched = NoamSchedule(opt, 16, 4)
    opt.add_param_group({"params": [Tensor(np.zeros(1), requires_grad=True)]})
    with pytest.raises(ValueError, match="NoamSchedule: the optimizer has 2 param group"):
        sched.step()


# --------------------------------------------------------------------------- clipping
def _grads(xp, arrays):
    params = [Tensor(xp.asarray(np.zeros_like(a)), requires_grad=True) for a in arrays]
    for p, a in zip(params, arrays):
        p.grad = xp.asarray(a.copy())
    return params


def test_clip_grad_norm_by_hand(xp):
    params = _grads(xp, [np.array([3.0]), np.array([[4.0]])]) + [Tensor(xp.asarray(np.ones(2)), requires_grad=True)]
    total = clip_grad_norm_(params, 1.0)
    assert isinstance(total, float) and total == 5.0
    np.testing.assert_allclose(params[0].grad.tolist(), [3.0 / (5.0 + 1e-6)], rtol=1e-15)
    np.testing.assert_allclose(params[1].grad.tolist(), [[4.0 / (5.0 + 1e-6)]], rtol=1e-15)
    assert params[2].grad is None
    small = _grads(xp, [np.array([0.3, 0.4])])
    assert clip_grad_norm_(small[0], 1.0) == pytest.approx(0.5) and small[0].grad.tolist() == [0.3, 0.4]
    assert clip_grad_norm_([], 1.0) == 0.0


@pytest.mark.torch
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(xp, torch, max_norm):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s) for s in [(5, 4), (4,), (3, 2, 2)]]
    params = _grads(xp, arrays)
    tparams = [torch.zeros(a.shape, dtype=torch.float64, requires_grad=True) for a in arrays]
    for t, a in zip(tparams, arrays):
        t.grad = torch.tensor(a)
    total = clip_grad_norm_(params, max_norm)
    assert total == pytest.approx(torch.nn.utils.clip_grad_norm_(tparams, max_norm).item(), rel=1e-14)
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.grad.tolist(), t.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_grad_norm_non_finite_as_torch(xp, bad):
    """torch: an infinite norm scales by 0 (inf * 0 = NaN), a NaN norm makes everything NaN."""
    params = _grads(xp, [np.array([1.0, bad]), np.array([3.0, 4.0])])
    total = clip_grad_norm_(params, 1.0)
    assert math.isinf(total) if bad == np.inf else math.isnan(total)
    expected = ([0.0, np.nan], [0.0, 0.0]) if bad == np.inf else ([np.nan, np.nan], [np.nan, np.nan])
    for p, e in zip(params, expected):
        np.testing.assert_array_equal(p.grad.tolist(), e)
    params = _grads(xp, [np.array([1.0, bad])])
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total gradient norm is"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[0].grad.tolist(), [1.0, bad])
    with pytest.raises(ValueError, match="max_norm must be a number >= 0"):
        clip_grad_norm_(params, -1.0)


@pytest.mark.torch
def test_clip_grad_norm_non_finite_matches_torch(torch):
    for bad in (float("inf"), float("nan")):
        ours = _grads(np, [np.array([1.0, bad]), np.array([3.0, 4.0])])
        theirs = [torch.zeros(2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
        for t, a in zip(theirs, [[1.0, bad], [3.0, 4.0]]):
            t.grad = torch.tensor(a, dtype=torch.float64)
        clip_grad_norm_(ours, 1.0)
        torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        for p, t in zip(ours, theirs):
            np.testing.assert_array_equal(p.grad, t.grad.numpy())
