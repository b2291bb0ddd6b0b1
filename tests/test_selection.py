"""Equal-budget hyper-parameter selection (the ``select`` slot): parsing, family spaces, the
choice on validation only, records, and resuming."""

from __future__ import annotations

import json
import math

import pytest

from rdbench.errors import ConfigError
from rdbench.registry import REGISTRY
from rdbench.resolution.run import plan_suite
from rdbench.resolution.select import budget_note, parse_select, space_points
from rdbench.results.record import Record
from rdbench.training import selection
from rdbench.training.reproduce import reproduce
from rdbench.training.runner import run_suite
from tests.tiny import TINY_DEFAULTS

LR = {"optimizer.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}}


def write_suite(tmp_path, runs: str, select: str, seeds: str = "[0, 1]"):
    path = tmp_path / "suite.yaml"
    path.write_text("suite: sel\ndefaults:\n" + TINY_DEFAULTS.format(root=tmp_path / "data")
                    + f"  seeds: {seeds}\n  select: {select}\nruns:\n" + runs)
    return path


# -- parsing ---------------------------------------------------------------------------------
def test_grid_points_are_log_spaced_over_the_family_space():
    spec = parse_select({"grid": 3}, "s", LR, "adapter/x")
    assert spec.method == "grid" and spec.space_from == "adapter/x"
    assert spec.grid == {"optimizer.lr": [1.0e-4, 1.0e-3, 1.0e-2]}
    assert spec.budget == 3
    assert space_points({"a.b": {"type": "int", "low": 1, "high": 3}}, 5) == {"a.b": [1, 2, 3]}


def test_explicit_grid_is_a_cartesian_product_in_file_order():
    spec = parse_select({"grid": {"optimizer.lr": [1, 2], "adapter.bottleneck": [8, 16]}}, "s", None, "x")
    assert spec.candidates() == [
        {"optimizer.lr": 1, "adapter.bottleneck": 8}, {"optimizer.lr": 1, "adapter.bottleneck": 16},
        {"optimizer.lr": 2, "adapter.bottleneck": 8}, {"optimizer.lr": 2, "adapter.bottleneck": 16},
    ]


@pytest.mark.parametrize("raw, message", [
    ({"grid": 2, "metric": "test/mR"}, "validation metric"),
    ({"grid": 2, "trials": 3}, "exactly one of"),
    ({}, None),
    ({"metric": "val/mR"}, "exactly one of"),
    ({"grid": 0}, "number of points"),
    ({"trials": 2, "space": {"optimizer.lr": {"type": "float", "low": 1, "high": 0}}}, "low"),
    ({"grid": 2, "seeds": [0, 0]}, "distinct"),
    ({"grid": 2, "budget": 3}, "unknown key"),
])
def test_bad_select_is_one_clear_line(raw, message):
    if message is None:
        assert parse_select(raw, "s", LR, "x") is None
        return
    with pytest.raises(ConfigError, match=message):
        parse_select(raw, "s", LR, "x")


def test_a_family_without_a_space_must_be_given_one():
    with pytest.raises(ConfigError, match="declares no search space"):
        parse_select({"trials": 2}, "s", None, "adapter/plugin")
    assert parse_select({"trials": 2}, "s", {}, "adapter/none") is None  # nothing trains


def test_families_declare_different_learning_rate_ranges():
    space = {k: REGISTRY.get(k).load().search_space for k in
             ("adapter/cmaa", "adapter/lora", "adapter/coop", "adapter/full", "adapter/none")}
    lows = {k: s["optimizer.lr"]["low"] for k, s in space.items() if s}
    assert space["adapter/none"] == {}
    assert lows["adapter/full"] < lows["adapter/lora"] < lows["adapter/cmaa"] < lows["adapter/coop"]


def test_budget_note_says_equal_or_unequal():
    a = parse_select({"grid": 4}, "s", LR, "x")
    b = parse_select({"grid": 2}, "s", LR, "x")
    assert "equal budget" in budget_note({"r1": a, "r2": a, "zero": None})
    assert "unequal" in budget_note({"r1": a, "r2": b})
    assert budget_note({"zero": None}) is None


def test_a_path_that_does_not_apply_fails_at_validate(tmp_path):
    path = write_suite(tmp_path, "  a: {adapter: {name: adapter/bottleneck, bottleneck: 4}}\n",
                       "{grid: {adapter.no_such_argument: [1, 2]}}")
    with pytest.raises(ConfigError, match="no_such_argument"):
        plan_suite(path)


# -- the choice ------------------------------------------------------------------------------
def test_selection_picks_the_best_validation_candidate_even_when_test_would_pick_another(tmp_path, monkeypatch):
    """The executor is replaced by one that returns made-up records in which validation and test
    disagree: the choice must follow validation, and candidates must be run as trials."""
    val = {3.0e-4: 40.0, 1.0e-3: 55.0, 3.0e-3: 50.0}
    test = {3.0e-4: 70.0, 1.0e-3: 45.0, 3.0e-3: 52.0}
    purposes = []

    def fake_execute(run, folder, fresh=False, extra_callbacks=(), purpose="run", search=None, trained_in=None):
        purposes.append(purpose)
        lr = run.components["optimizer"].args["lr"]
        record = Record(suite="sel", run=run.plan.run, run_index=0, seed=run.seed, status="success",
                        metrics={"val/mR": val[lr], "test/mR": test[lr]}, purpose=purpose,
                        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:10+00:00")
        return record

    monkeypatch.setattr(selection, "execute", fake_execute)
    path = write_suite(tmp_path, "  a: {adapter: {name: adapter/bottleneck, bottleneck: 4}}\n",
                       "{grid: {optimizer.lr: [3.0e-4, 1.0e-3, 3.0e-3]}}", seeds="[0]")
    run = plan_suite(path)[0]
    outcome = selection.select(run, tmp_path / "results", echo=lambda line: None)
    assert outcome.chosen == {"optimizer.lr": 1.0e-3}  # test would have picked 3e-4
    assert purposes == ["trial"] * 3
    assert [c["score"] for c in outcome.search["candidates"]] == [40.0, 55.0, 50.0]
    assert outcome.search["cost_s"] == 30.0 and outcome.search["metric"] == "val/mR"


def test_equal_scores_keep_the_earlier_candidate(tmp_path, monkeypatch):
    def fake_execute(run, folder, fresh=False, extra_callbacks=(), purpose="run", search=None, trained_in=None):
        return Record(suite="sel", run=run.plan.run, run_index=0, seed=run.seed, status="success",
                      metrics={"val/mR": 10.0}, purpose=purpose)

    monkeypatch.setattr(selection, "execute", fake_execute)
    path = write_suite(tmp_path, "  a: {adapter: {name: adapter/bottleneck, bottleneck: 4}}\n",
                       "{grid: {optimizer.lr: [1.0e-3, 3.0e-3]}}", seeds="[0]")
    assert selection.select(plan_suite(path)[0], tmp_path / "r", echo=lambda line: None).chosen == {"optimizer.lr": 1.0e-3}


# -- end to end, real training ---------------------------------------------------------------
def test_suite_with_selection_end_to_end(tmp_path):
    runs = ("  zero: {adapter: adapter/none}\n"
            "  a: {adapter: {name: adapter/bottleneck, bottleneck: 4}}\n")
    path = write_suite(tmp_path, runs, "{grid: {optimizer.lr: [1.0e-4, 3.0e-2]}, seeds: [0]}")
    results = tmp_path / "results"
    lines: list[str] = []
    outcome = run_suite(path, results=results, echo=lines.append)
    assert outcome.done == 4 and outcome.failed == 0, lines
    candidates = sorted((results / "sel" / "a" / "select").glob("c*/seed0/record.json"))
    assert len(candidates) == 2
    scores = []
    for c in candidates:
        record = Record.read(c)
        assert record.purpose == "trial"
        assert not any(k.startswith("test") for k in record.metrics)  # never evaluated on test
        assert not (c.parent / "test_ranks.json").exists()
        scores.append(record.metrics["val/mR"])
    best_lr = [1.0e-4, 3.0e-2][0 if scores[0] >= scores[1] else 1]
    for seed in (0, 1):
        record = Record.read(results / "sel" / "a" / f"seed{seed}" / "record.json")
        assert record.selection["chosen"] == {"optimizer.lr": best_lr}
        assert [c["score"] for c in record.selection["candidates"]] == [round(s, 4) for s in scores]
        assert record.selection["monitor"] == "val/mR" and record.selection["cost_s"] > 0
        assert record.components["optimizer"]["init_args"]["lr"] == best_lr
        assert "test/mR" in record.metrics
    # Seed 0 is a selection seed: the chosen candidate trained exactly that run, so the run
    # takes its checkpoint and log over and is only evaluated; seed 1 trains.
    k = 0 if scores[0] >= scores[1] else 1
    seed0 = Record.read(results / "sel" / "a" / "seed0" / "record.json")
    assert seed0.selection["trained_in"] == f"../select/c{k}/seed0"
    assert "trained_in" not in Record.read(results / "sel" / "a" / "seed1" / "record.json").selection
    candidate = Record.read(candidates[k])
    assert seed0.train == candidate.train and seed0.metrics["val/mR"] == candidate.metrics["val/mR"]
    assert (results / "sel" / "a" / "seed0" / "checkpoints" / "best.ckpt").is_file()
    assert (results / "sel" / "a" / "seed0" / "logs" / "metrics.csv").is_file()
    assert any(f"candidate c{k}: evaluated, not trained again" in line for line in lines)
    # ... and training it again from its config.yaml gives the very same metrics, test included.
    again = reproduce(results / "sel" / "a" / "seed0", results=tmp_path / "rerun")
    assert again.differing == [] and any(name.startswith("test/") for name, _, _ in again.rows)
    zero = Record.read(results / "sel" / "zero" / "seed0" / "record.json")
    assert "candidates" not in zero.selection  # nothing trains: nothing selected
    assert not (results / "sel" / "zero" / "select").exists()
    assert any("equal budget" in line for line in lines)

    # A rerun reads the candidates back and skips every run: nothing retrains.
    lines.clear()
    again = run_suite(path, results=results, echo=lines.append)
    assert again.skipped == 4 and again.done == 0, lines
    assert json.loads((candidates[0]).read_text())["finished_at"] == Record.read(candidates[0]).finished_at


def test_trials_are_seeded_and_reproducible(tmp_path, monkeypatch):
    seen: list[float] = []

    def fake_execute(run, folder, fresh=False, extra_callbacks=(), purpose="run", search=None, trained_in=None):
        lr = run.components["optimizer"].args["lr"]
        seen.append(lr)
        return Record(suite="sel", run=run.plan.run, run_index=0, seed=run.seed, status="success",
                      metrics={"val/mR": -abs(math.log10(lr) + 2.5)}, purpose=purpose)

    monkeypatch.setattr(selection, "execute", fake_execute)
    path = write_suite(tmp_path, "  a: {adapter: {name: adapter/bottleneck, bottleneck: 4}}\n",
                       "{trials: 4, seeds: [0]}", seeds="[0]")
    run = plan_suite(path)[0]
    first = selection.select(run, tmp_path / "r1", echo=lambda line: None)
    lrs_first, seen[:] = list(seen), []
    second = selection.select(run, tmp_path / "r2", echo=lambda line: None)
    assert seen == lrs_first and first.chosen == second.chosen
    assert all(3.0e-4 <= lr <= 1.0e-2 for lr in seen)  # the adapter family's range


def test_a_selection_held_elsewhere_is_put_off_and_the_suite_goes_on(tmp_path, monkeypatch):
    """With --jobs N, a process that finds a candidate of run a training in another process
    goes on with run b instead of waiting, and comes back to a once the candidate is free."""
    from rdbench.atomic import write_yaml
    from rdbench.results.lock import RunLock
    from rdbench.training import runner

    order: list[str] = []
    holder: list[RunLock] = []

    def fake_execute(run, folder, fresh=False, extra_callbacks=(), purpose="run", search=None, trained_in=None):
        order.append(f"{run.plan.run}/seed{run.seed}")
        if run.plan.run.startswith("b/") and holder:  # the other process finishes meanwhile
            holder.pop().release()
        record = Record(suite="sel", run=run.plan.run, run_index=0, seed=run.seed, status="success",
                        metrics={"val/mR": 10.0, "test/mR": 10.0}, purpose=purpose,
                        cost={"trainable_params": 1, "backbone_params": 1},
                        selection={"monitor": "val/mR", "best_score": 10.0, "checkpoint": None})
        write_yaml(folder / "config.yaml", run.config())
        record.write(folder)
        return record

    monkeypatch.setattr(selection, "execute", fake_execute)
    monkeypatch.setattr(runner, "execute", fake_execute)
    monkeypatch.setattr(runner, "WAIT_POLL_S", 0.01)
    path = write_suite(tmp_path, "  a: {adapter: {name: adapter/bottleneck, bottleneck: 4}}\n"
                                 "  b: {adapter: {name: adapter/bottleneck, bottleneck: 8}}\n",
                       "{grid: {optimizer.lr: [1.0e-3, 3.0e-3]}}", seeds="[0, 1]")
    results = tmp_path / "results"
    lock = RunLock(results / "sel" / "a" / "select" / "c1" / "seed0")
    assert lock.acquire()  # "another process" trains a's second candidate
    holder.append(lock)
    lines: list[str] = []
    outcome = runner.run_suite(path, results=results, echo=lines.append)
    assert outcome.done == 4 and outcome.failed == 0, lines
    # b's candidates and seeds ran while a's candidate was held; a's seeds came after.
    assert order.index("b/select/c0/seed0") < order.index("a/select/c1/seed0") < order.index("a/seed1")
    assert order.index("b/seed1") < order.index("a/seed1")
    assert order.count("a/select/c0/seed0") == 1  # read back when a was asked again, not rerun
    assert sum("training in another process" in line for line in lines) == 1
