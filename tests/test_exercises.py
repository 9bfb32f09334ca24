"""The exercises: reference solutions pass, blank stubs and known mistakes fail, and the messages teach."""
import re
from pathlib import Path

import numpy as np
import pytest

from nptransformer import Tensor, exercise_solutions
from nptransformer import exercises as E

ROOT = Path(__file__).resolve().parent.parent
NAMES = list(E.EXERCISES)


def _define(source, name):
    """Run ``source`` (a function definition) and return the function called ``name``."""
    namespace = {"np": np}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def _solution(name):
    return getattr(exercise_solutions, E.EXERCISES[name].function_name)


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_passes(name):
    result = E.grade(name, _solution(name))
    assert result.passed, result.message
    assert result.message.startswith(f"PASS: {name}_backward(")


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_equals_the_package_backward(name):
    """Same gradients as the op's own backward, within 1e-12, on every case of the exercise."""
    exercise = E.EXERCISES[name]
    for case in exercise.make_cases():
        ours = E._gradients(E._learner_op(exercise, _solution(name)), case)
        package = E._gradients(exercise.op, case)
        assert ours is not None and package is not None and len(ours) == len(package)
        for a, b in zip(ours, package):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_blank_stub_is_reported_as_not_implemented(name):
    exercise = E.EXERCISES[name]
    result = E.grade(name, _define(E.stub(name), exercise.function_name))
    assert result.status == "not implemented" and not result.passed
    assert result.message.startswith(f"NOT IMPLEMENTED YET: {exercise.signature}")
    assert "raise NotImplementedError" in result.message


def _mistakes():
    for name, exercise in E.EXERCISES.items():
        for i, mistake in enumerate(exercise.mistakes):
            yield pytest.param(name, mistake, id=f"{name}-{i}")


@pytest.mark.parametrize("name,mistake", list(_mistakes()))
def test_known_mistake_fails_and_is_named(name, mistake):
    result = E.grade(name, mistake.backward)
    assert result.status == "wrong", result.message
    assert "worst element: index" in result.message and "analytic (your backward)" in result.message
    assert f"This is a mistake we have seen before: {mistake.hint}" in result.message


def test_every_exercise_has_mistakes_hints_and_a_stub_named_after_it():
    for name, exercise in E.EXERCISES.items():
        assert exercise.mistakes and exercise.hints
        assert exercise.stub.startswith(f"def {name}_backward(")
        assert exercise.signature == exercise.stub.splitlines()[0][4:-1]
        assert exercise.signature in E.__doc__, f"the module docstring does not list {exercise.signature}"


def test_cross_entropy_without_the_mean_shows_the_values_and_the_1_over_n_hint():
    def cross_entropy_backward(p, target, dloss, label_smoothing):
        q = np.full_like(p, label_smoothing / p.shape[1])
        q[np.arange(len(target)), target] += 1 - label_smoothing
        return (p - q) * dloss  # forgot / N

    result = E.grade("cross_entropy", cross_entropy_backward)
    assert result.status == "wrong"
    assert "times 4 everywhere" in result.message  # gradcheck's own hint: N = 4 rows
    assert "the 1/N is missing" in result.message
    assert "input 0 is `logits`: the wrong gradient is your `dlogits`" in result.message
    assert "docs/derivations/cross_entropy.md" in result.message


def test_layer_norm_with_sums_instead_of_means_is_named():
    def layer_norm_backward(xhat, rstd, weight, dy):
        g = dy * weight
        dx = rstd * (g - g.sum(axis=-1, keepdims=True) - xhat * (g * xhat).sum(axis=-1, keepdims=True))
        lead = tuple(range(dy.ndim - 1))
        return dx, (dy * xhat).sum(axis=lead), dy.sum(axis=lead)

    result = E.grade("layer_norm", layer_norm_backward)
    assert result.status == "wrong" and "the 1/C is missing" in result.message


def test_an_unknown_wrong_answer_lists_the_exercise_hints():
    result = E.grade("softmax", lambda y, dy: y * (dy + (dy * y).sum(axis=-1, keepdims=True)))
    assert result.status == "wrong"
    assert "Things to check for softmax:" in result.message
    for hint in E.EXERCISES["softmax"].hints:
        assert f"  - {hint}" in result.message


def test_a_wrong_gradient_of_a_later_input_is_named():
    def layer_norm_backward(xhat, rstd, weight, dy):
        dx, dweight, dbias = exercise_solutions.layer_norm_backward(xhat, rstd, weight, dy)
        return dx, dweight, 2 * dbias

    result = E.grade("layer_norm", layer_norm_backward)
    assert "input 2 is `bias`: the wrong gradient is your `dbias`" in result.message


def test_code_that_raises_is_reported_with_its_line():
    def softmax_backward(y, dy):
        s = (dy * y).sum(axis=-1)
        return y * (dy - s)  # (3, 5) - (3,) does not broadcast

    result = E.grade("softmax", softmax_backward)
    assert result.status == "error"
    assert "ValueError" in result.message and "operands could not be broadcast" in result.message
    assert re.search(r"in softmax_backward, line \d+: `return y \* \(dy - s\)", result.message)
    assert "It should return dx with the shape of x." in result.message


@pytest.mark.parametrize("answer,expected", [
    (lambda y, dy: None, "returned None for dx"),
    (lambda y, dy: Tensor(y * dy), "returned a Tensor for dx"),
    (lambda y, dy: 1.0, "returned a float for dx"),
    (lambda y, dy: (y, dy), "must return dx (1 value(s)), but it returned a tuple of 2"),
])
def test_unusable_return_values_are_explained(answer, expected):
    result = E.grade("softmax", answer)
    assert result.status == "error" and expected in result.message


def test_too_few_gradients_are_explained():
    result = E.grade("attention", lambda q, k, v, p, dout, scale: (q, k))
    assert "must return dq, dk, dv (3 value(s)), but it returned a tuple of 2" in result.message


def test_changing_dout_in_place_fails_even_when_the_values_are_right():
    def softmax_backward(y, dy):
        dy -= (dy * y).sum(axis=-1, keepdims=True)
        dy *= y
        return dy

    result = E.grade("softmax", softmax_backward)
    assert result.status == "error"
    assert "changed its argument `dy` in place" in result.message


def test_check_prints_the_verdict_and_returns_none(capsys):
    assert E.check("tanh", exercise_solutions.tanh_backward) is None
    assert capsys.readouterr().out.startswith("PASS: tanh_backward(y, dy) matches finite differences")
    assert E.check("tanh", lambda y, dy: dy * (1 - y)) is None
    out = capsys.readouterr().out
    assert out.startswith("FAIL: tanh_backward(y, dy)") and "the square is missing" in out


def test_misuse_raises():
    with pytest.raises(ValueError, match="no exercise called 'softmaks'.*softmax"):
        E.check("softmaks", exercise_solutions.softmax_backward)
    with pytest.raises(TypeError, match="pass your function itself"):
        E.check("softmax", exercise_solutions.softmax_backward(np.ones((1, 2)), np.ones((1, 2))))
    with pytest.raises(ValueError, match="no exercise called"):
        E.stub("nope")


def _exercise_cells():
    """(notebook, cell source) for every cell tagged "exercise" in the jupytext notebooks."""
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        for cell in re.split(r"^(?=# %%)", path.read_text(encoding="utf-8"), flags=re.M):
            header, _, body = cell.partition("\n")
            if header.startswith("# %%") and '"exercise"' in header:
                yield pytest.param(path.name, body, id=f"{path.stem}:{body.split('(')[0][4:]}")


EXERCISE_CELLS = list(_exercise_cells())


def test_the_notebooks_hold_exercise_cells():
    names = {re.match(r"def (\w+)_backward", body).group(1) for _, body in (p.values for p in EXERCISE_CELLS)}
    assert {"tanh", "softmax", "cross_entropy", "layer_norm", "attention"} <= names


@pytest.mark.parametrize("notebook,body", EXERCISE_CELLS)
def test_notebook_exercise_cell_is_the_blank_stub_and_runs_without_failing(notebook, body, capsys):
    name = re.match(r"def (\w+)_backward", body).group(1)
    assert body.startswith(E.stub(name)), f"{notebook}: the {name} exercise cell drifted from exercises.stub({name!r})"
    assert re.search(rf'^check\("{name}", {name}_backward\)$', body, re.M), f"{notebook}: the cell does not call check"
    exec(compile(body, notebook, "exec"), {"np": np, "check": E.check})
    assert capsys.readouterr().out.startswith("NOT IMPLEMENTED YET")
