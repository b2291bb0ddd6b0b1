"""Hyper-parameter searches in records (``selection``'s search keys) and how compare shows them."""

from __future__ import annotations

import copy
import io
import json

import polars as pl
import pytest
from compare_records import make_record, ranked_record, ranks_hitting, with_search, write
from test_latex import check_structure

from rdbench.results.compare import compare
from rdbench.results.record import Record
from rdbench.results.selection import chosen_text, format_value, short_names

LRS = [{"optimizer.lr": v} for v in (1e-4, 3e-4, 1e-3, 3e-3)]


def v2(record: dict) -> dict:
    """A schema-2 version of a helper record (backbone size stated)."""
    record = copy.deepcopy(record)
    record["schema_version"] = 2
    record["cost"]["backbone_params"] = 151_280_000
    record.setdefault("selection", {"monitor": "val/mR", "best_score": 1.0, "checkpoint": None})
    return record


def searched(run="lora", run_index=1, seed=0, chosen=None, **kw):
    chosen = chosen or {"optimizer.lr": 1e-3}
    return with_search(make_record("s", run, run_index, seed, base=10.0), chosen, LRS, [40.0, 41.0, 42.0, None], **kw)


def test_search_keys_round_trip():
    data = v2(searched())
    record = Record.from_json(data)
    assert record.selection["chosen"] == {"optimizer.lr": 1e-3}
    assert record.selection["candidates"][3] == {"values": {"optimizer.lr": 3e-3}, "score": None, "status": "failed"}
    assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record
    # Other keys a writer adds are kept; integers where floats are meant are read as floats.
    data["selection"] |= {"space_from": "adapter/lora", "cost_s": 12}
    data["selection"]["candidates"][0]["score"] = 40
    record = Record.from_json(data)
    assert record.selection["space_from"] == "adapter/lora" and record.selection["cost_s"] == 12.0
    assert isinstance(record.selection["candidates"][0]["score"], float)
    # A record without a search stays valid, in both versions.
    assert Record.from_json(v2(make_record("s", "r", 0, 0, base=1.0))).selection["checkpoint"] is None


@pytest.mark.parametrize("change, message", [
    ({"chosen": "lr"}, "field 'selection.chosen' has an invalid value 'lr'"),
    ({"method": "random"}, "field 'selection.method' has an invalid value 'random' (one of grid, trials)"),
    ({"seeds": [0, "1"]}, "field 'selection.seeds'"),
    ({"cost_s": -1}, "field 'selection.cost_s'"),
    ({"metric": ""}, "field 'selection.metric'"),
    ({"candidates": [{"values": {"lr": 1}, "score": "high", "status": "success"}]}, "field 'selection.candidates[0]'"),
    ({"candidates": [{"values": {"lr": 1}, "score": 1.0}]}, "field 'selection.candidates[0]'"),
])
def test_bad_search_keys_name_the_field(change, message):
    data = v2(searched())
    data["selection"] |= change
    with pytest.raises(ValueError) as info:
        Record.from_json(data)
    assert str(info.value).startswith(message)


def test_search_keys_come_together():
    data = v2(searched())
    del data["selection"]["cost_s"]
    with pytest.raises(ValueError, match=r"'selection' has search key\(s\) metric, .* but lacks cost_s"):
        Record.from_json(data)


def test_short_formatting():
    assert [format_value(v) for v in (1e-3, 3e-4, 2.5e-5, 0.0125, 32, 0.5, 1.0, 123456.0, True, None, ["q", "v"])] == [
        "1e-3", "3e-4", "2.5e-5", "0.0125", "32", "0.5", "1", "1.23e5", "true", "null", "[q,v]"]
    assert format_value(0.123456) == "0.123" and format_value(0.0) == "0"
    assert short_names(["optimizer.lr", "adapter.scale", "loss.scale"]) == {
        "optimizer.lr": "lr", "adapter.scale": "adapter.scale", "loss.scale": "loss.scale"}
    assert chosen_text({"optimizer.lr": 1e-3, "adapter.bottleneck": 32}) == "lr=1e-3, bottleneck=32"


def suite_with_searches(root, disagree=False):
    """``base`` without a search; ``lora`` chose lr=1e-3 at both seeds (or 3e-4 at seed 1 with
    ``disagree``); ``cmaa`` chose two values among 2 trials."""
    for seed in (0, 1):
        ranks = ranks_hitting(10, 50, 5, 25)
        write(root, ranked_record("s", "base", 0, seed, ranks), ranks=ranks)
        lr = 3e-4 if disagree and seed == 1 else 1e-3
        record = ranked_record("s", "lora", 1, seed, ranks)
        write(root, with_search(record, {"optimizer.lr": lr}, LRS, [40.0, 41.0, 42.0, None], cost_s=100.0), ranks=ranks)
        record = ranked_record("s", "cmaa", 2, seed, ranks)
        values = [{"optimizer.lr": 1e-3, "adapter.bottleneck": 16}, {"optimizer.lr": 2e-3, "adapter.bottleneck": 32}]
        write(root, with_search(record, values[1], values, [30.0, 31.5], method="trials", cost_s=50.0), ranks=ranks)


def test_compare_shows_a_chosen_column_in_every_format(tmp_path):
    suite_with_searches(tmp_path)
    text = compare(tmp_path, columns=["mR"]).text
    lines = text.splitlines()
    assert lines[2].split()[-1] == "chosen"
    rows = {ln.split()[0]: ln for ln in lines[4:7]}
    assert rows["lora"].endswith("lr=1e-3") and rows["cmaa"].endswith("lr=2e-3, bottleneck=32")
    assert rows["base"].rstrip().endswith("—")
    budget = ("Hyper-parameters (column chosen) chosen on val/mR among lora: 4 candidates per method (grid); "
              "cmaa: 2 candidates per method (trials) at seed 0, never on test; 2 of 3 rows searched, "
              "150 s of search in all; 1 candidate in all without a score (failed); —: the suite's values, no search.")
    assert budget in text
    assert "differ between seeds" not in text
    markdown = compare(tmp_path, columns=["mR"], fmt="markdown").text
    assert "| chosen" in markdown and "lr=2e-3, bottleneck=32 |" in markdown and f"- {budget}" in markdown
    latex = compare(tmp_path, columns=["mR"], fmt="latex", baseline="base").text
    spec, cells = check_structure(latex)
    assert spec == "lrrl" and [c[-1] for c in cells] == ["---", "lr=1e-3", "lr=2e-3, bottleneck=32"]
    assert "& Chosen \\\\" in latex and all(ord(ch) < 128 for ch in latex)  # α, —, Δ as commands
    assert "lr=2e-3, bottleneck=32 \\\\" in latex and "---: the suite's values" in latex
    df = pl.read_csv(io.StringIO(compare(tmp_path, columns=["mR"], fmt="csv").text))
    lora = df.filter(pl.col("run") == "lora").row(0, named=True)
    assert json.loads(lora["chosen"]) == {"optimizer.lr": 1e-3}
    assert (lora["search_metric"], lora["search_candidates"], lora["search_cost_s"]) == ("val/mR", 4, 100.0)
    assert df.filter(pl.col("run") == "base")["chosen"].to_list() == [None]


def test_seeds_that_chose_differently_are_listed(tmp_path):
    suite_with_searches(tmp_path, disagree=True)
    text = compare(tmp_path, columns=["mR"], baseline="base").text
    assert next(ln for ln in text.splitlines() if ln.startswith("lora ")).endswith("differs by seed")
    assert ("Chosen values differ between seeds of one run (a run's search should choose once for all "
            "its seeds): lora: seed 0 lr=1e-3; seed 1 lr=3e-4.") in text
    df = pl.read_csv(io.StringIO(compare(tmp_path, columns=["mR"], fmt="csv").text))
    assert df.filter(pl.col("run") == "lora")["chosen"].to_list() == [None]


def test_no_search_no_column(tmp_path):
    write(tmp_path, make_record("s", "a", 0, 0, base=1.0))
    text = compare(tmp_path, columns=["mR"]).text
    assert "chosen" not in text and "Hyper-parameters" not in text


def test_a_search_on_test_is_called_out(tmp_path):
    write(tmp_path, searched(metric="test/mR"))
    text = compare(tmp_path, columns=["mR"]).text
    assert "chosen on test/mR" in text and "NOT on validation for lora: their test numbers are optimistic" in text


def test_a_table_without_search_states_the_learning_rate_it_trained_at(tmp_path):
    """A table at one hand-set rate compares methods at that rate: the notes must say so (and
    leave out rows that train nothing)."""
    for run, i, lr in (("zero", 0, 1e-3), ("a", 1, 3e-3), ("b", 2, 3e-3)):
        for seed in (0, 1):
            record = v2(make_record("s", run, i, seed, base=10.0, trainable=0 if run == "zero" else 1000))
            record["components"]["optimizer"] = {"key": "optimizer/adamw", "class_path": "x.Y",
                                                 "init_args": {"lr": lr}, "source": "builtin"}
            write(tmp_path, record)
    text = compare(tmp_path, "s").text
    assert "No hyper-parameter search: every row trains at the suite's values, optimizer lr 3e-3 for every row." in text
    record = v2(make_record("s", "c", 3, 0, base=10.0))
    record["components"]["optimizer"] = {"key": "optimizer/adamw", "class_path": "x.Y", "init_args": {"lr": 1e-4}, "source": "builtin"}
    write(tmp_path, record)
    assert "optimizer lr a: 3e-3; b: 3e-3; c: 1e-4." in compare(tmp_path, "s").text
