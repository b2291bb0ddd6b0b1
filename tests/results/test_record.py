"""The Record type: round trip, both schema versions, and malformed records named in warnings.

``fixtures/v1/quickstart/bottleneck/seed0/record.json`` is a record exactly as schema version 1
wrote it: produced by ``rdbench run suites/quickstart.yaml --only bottleneck --set
trainer.max_epochs=1`` at the last commit before records gained ``cost.backbone_params``
(commit de4f194's parent), unedited but for the home folder in two cache paths, shown as ``~``.
It must stay readable for as long as version 1 is.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from rdbench.cli import main
from rdbench.results.compare import load_records, summarize
from rdbench.results.record import RECORD_FILE, SCHEMA_VERSION, Record

V1 = Path(__file__).parent / "fixtures" / "v1"
V1_RECORD = V1 / "quickstart" / "bottleneck" / "seed0" / RECORD_FILE
RECALLS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")
BACKBONE_PARAMS = 7_981_057  # tiny-rs: the fixture's total_params minus its adapter's


def v1_data() -> dict:
    return json.loads(V1_RECORD.read_text(encoding="utf-8"))


def v2_record(run: str, run_index: int, seed: int, recalls: list[float], trainable: int,
              adapter: str, status: str = "success") -> Record:
    """A version-2 record shaped like the fixture (same dataset, backbone and provenance), of a
    run that adds no parameters (zero-shot, full fine-tuning)."""
    old = v1_data()
    metrics = {}
    for split, shift in (("val", 1.0), ("test", 0.0)):
        values = [r + shift for r in recalls]
        metrics.update({f"{split}/{name}": v for name, v in zip(RECALLS, values)})
        metrics[f"{split}/mR"] = sum(values) / 6
    components = copy.deepcopy(old["components"])
    components["adapter"] = {"key": adapter, "class_path": "rdbench.adapters.basic.X", "init_args": {},
                             "source": "builtin"}
    return Record(
        suite="quickstart", run=run, run_index=run_index, seed=seed, status=status,
        started_at="2026-12-03T10:00:00+00:00", finished_at="2026-12-03T10:01:00+00:00",
        components=components, metrics=metrics, eval=copy.deepcopy(old["eval"]),
        train={"train/loss": 2.1, "epochs": 1, "steps": 62} if trainable else {},
        cost={"trainable_params": trainable, "adapter_params": 0, "total_params": BACKBONE_PARAMS,
              "backbone_params": BACKBONE_PARAMS, "train_time_s": 10.0, "peak_mem_bytes": 700_000_000,
              "peak_mem_kind": "process_max_rss"},
        provenance=copy.deepcopy(old["provenance"]) | {"code_version": "93293f7"},
        selection={"monitor": "val/mR", "best_score": metrics["val/mR"], "checkpoint": "checkpoints/best.ckpt"},
    )


def test_round_trip():
    record = v2_record("full", 1, 0, [10.0, 30.0, 50.0, 9.0, 33.0, 60.0], BACKBONE_PARAMS, "adapter/full")
    record.resumed_from_step = 50
    data = record.to_json()
    assert data["schema_version"] == SCHEMA_VERSION == 2 and "failed_at_step" not in data
    assert Record.from_json(json.loads(json.dumps(data))) == record
    assert record.to_json() is not data and record.to_json()["cost"] is not record.cost  # a copy
    running = Record(suite="s", run="r", run_index=0, seed=1, status="running")
    assert set(running.to_json()) >= {"schema_version", "selection", "metrics"}
    assert not {"resumed_from_step", "failed_at_step"} & set(running.to_json())
    assert Record.from_json(running.to_json()) == running


def test_write_and_read(tmp_path):
    record = v2_record("full", 1, 0, [1.0] * 6, 10, "adapter/full")
    path = record.write(tmp_path / "run" / "seed0")
    assert path == tmp_path / "run" / "seed0" / RECORD_FILE
    assert Record.read(path) == record and Record.read(path.parent) == record
    assert [p.name for p in path.parent.iterdir()] == [RECORD_FILE]  # no temporary file left
    assert Record.read(tmp_path / "absent.json") is None
    path.write_text("{half")
    assert Record.read(path) is None
    path.write_text(json.dumps({"schema_version": 2, "suite": "s"}))
    assert Record.read(path) is None


def test_version_1_loads_with_none_for_what_it_lacks():
    data = v1_data()
    assert data["schema_version"] == 1 and "backbone_params" not in data["cost"]
    record = Record.from_json(data)
    assert record.schema_version == 1 and record.cost["backbone_params"] is None
    assert record.cost["total_params"] == 8_047_873 and record.metrics["test/mR"] == pytest.approx(29.2667, abs=1e-4)
    assert record.selection == {"monitor": "val/mR", "best_score": 31.366666793823242,
                                "checkpoint": "checkpoints/best.ckpt"}
    del data["selection"]
    assert Record.from_json(data).selection is None
    assert data == {k: v for k, v in v1_data().items() if k != "selection"}  # input untouched


def test_version_2_requires_its_fields_on_success():
    good = v2_record("full", 1, 0, [1.0] * 6, 10, "adapter/full").to_json()
    no_size = copy.deepcopy(good)
    del no_size["cost"]["backbone_params"]
    with pytest.raises(ValueError, match="cost.backbone_params"):
        Record.from_json(no_size)
    with pytest.raises(ValueError, match="'selection'"):
        Record.from_json({**good, "selection": None})
    # A run that stopped early may lack both.
    failed = {**no_size, "status": "failed", "error": "RuntimeError: boom", "selection": None, "failed_at_step": 7}
    assert Record.from_json(failed).failed_at_step == 7
    assert Record.from_json({**failed, "status": "pruned"}).status == "pruned"


@pytest.mark.parametrize("change, message", [
    ({"schema_version": 3}, "schema_version 3 is not supported (supported: 1, 2)"),
    ({"schema_version": None}, "schema_version None is not supported"),
    ({"suite": ""}, "field 'suite' has an invalid value ''"),
    ({"run_index": "2"}, "field 'run_index' has an invalid value '2'"),
    ({"seed": True}, "field 'seed' has an invalid value True"),
    ({"status": 1}, "field 'status' has an invalid value 1"),
    ({"error": 5}, "field 'error' has an invalid value 5"),
    ({"cost": [1]}, "'cost' is not an object"),
    ({"metrics": {"test/mR": "high"}}, "metric 'test/mR' is not a number"),
    ({"selection": "best"}, "'selection' is not an object"),
    ({"failed_at_step": 1.5}, "field 'failed_at_step' has an invalid value 1.5"),
])
def test_malformed_records_name_the_field(change, message):
    with pytest.raises(ValueError) as info:
        Record.from_json({**v1_data(), **change})
    assert str(info.value).startswith(message)
    with pytest.raises(ValueError, match="lacks required field 'seed'"):
        Record.from_json({k: v for k, v in v1_data().items() if k != "seed"})
    with pytest.raises(ValueError, match="is not a JSON object"):
        Record.from_json([v1_data()])


def test_a_malformed_record_is_a_warning_naming_file_and_field(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(V1, results)
    bad = v2_record("full", 1, 0, [1.0] * 6, 10, "adapter/full").to_json()
    bad["metrics"]["test/i2t_R@5"] = "n/a"
    path = results / "quickstart" / "full" / "seed0" / RECORD_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(bad))
    assert main(["compare", str(results)]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {path}: metric 'test/i2t_R@5' is not a number; skipped" in err.splitlines()
    assert "bottleneck " in out and "full " not in out


def test_one_table_shows_version_1_and_version_2_rows(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(V1, results)  # quickstart/bottleneck/seed0: version 1
    v2_record("zero-shot", 0, 0, [5.0, 20.0, 35.0, 4.0, 18.0, 32.0], 0, "adapter/none").write(
        results / "quickstart" / "zero-shot" / "seed0")
    v2_record("full", 1, 0, [12.0, 30.0, 52.0, 10.0, 36.0, 61.0], BACKBONE_PARAMS, "adapter/full").write(
        results / "quickstart" / "full" / "seed0")
    assert main(["compare", str(results), "--suite", "quickstart"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("zero-shot", "full", "bottleneck")}
    assert list(rows) == ["zero-shot", "full", "bottleneck"]  # suite order: run_index 0, 1, 2
    # method, seeds, failed, trainable (count and share), then six recalls and mR (one seed: the mean alone).
    assert rows["zero-shot"][:4] == ["zero-shot", "1", "0", "0"]
    assert rows["zero-shot"][4:7] == ["5.00", "20.00", "35.00"]  # one seed: means alone, no "± 0.00"
    assert rows["full"][3:5] == ["7.98M", "(100%)"]
    assert rows["full"][5:8] == ["12.00", "30.00", "52.00"]
    # The version-1 row, with its own numbers; its share uses the size the version-2 records state.
    assert rows["bottleneck"][3:5] == ["0.07M", "(0.84%)"]
    means = rows["bottleneck"][5:]  # one seed: the means alone
    assert means == ["8.00", "25.00", "46.00", "7.00", "31.80", "57.80", "29.27"]
    summary = summarize(load_records(results)[0])
    assert summary["backbone_params"].to_list() == [BACKBONE_PARAMS] * 3


def test_version_1_alone_falls_back_to_the_smallest_total(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(V1, results)
    summary = summarize(load_records(results)[0])
    assert summary["backbone_params"].to_list() == [8_047_873]
    # A version-2 record's own size is never replaced by a total, even a smaller one.
    record = v2_record("full", 1, 0, [1.0] * 6, 10, "adapter/full")
    record.cost["total_params"] = 5
    record.write(results / "quickstart" / "full" / "seed0")
    assert summarize(load_records(results)[0])["backbone_params"].to_list() == [BACKBONE_PARAMS] * 2


def test_a_record_whose_values_do_not_fit_the_table_is_skipped_with_its_warning(tmp_path, capsys):
    """The attack: a failed record with a 20-digit seed made polars raise ComputeError for the
    whole folder. It is skipped with a warning naming it; the other records are compared; and
    when every record is rejected the error line says why."""
    from compare_records import make_record, write

    from rdbench.cli import main

    write(tmp_path, make_record("s", "good", 0, 0, base=10.0))
    bad = make_record("s", "bad", 1, 0, base=10.0, status="failed")
    bad["seed"] = 12345678901234567890123
    write(tmp_path, bad, name="bad")
    assert main(["compare", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "good" in out and "does not fit the table" in err and "bad" in err
    shutil.rmtree(tmp_path / "s" / "good")
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable record.json found (1 skipped; the first:" in err[0] and "does not fit" in err[0]


def test_run_skips_only_records_compare_would_count(tmp_path):
    """The attack: a hand-written ``{"status": "success"}``, a record of a future schema version
    or one whose seed no table can hold made ``rdbench run`` skip the run, while ``compare``
    rejected the same record."""
    from compare_records import make_record

    from rdbench.training.run_state import is_done

    good = make_record("s", "a", 0, 0, base=10.0)
    good.update(schema_version=2, selection={"monitor": "val/mR", "best_score": 10.0, "checkpoint": None})
    good["cost"]["backbone_params"] = 1
    future, huge = dict(good, schema_version=99), dict(good, seed=10 ** 25)
    for record, done in ((good, True), ({"status": "success"}, False), (future, False), (huge, False)):
        (tmp_path / "record.json").write_text(json.dumps(record))
        assert is_done(tmp_path) is done, record
