"""A suite's documented short variant: ``quick:`` in the suite, ``rdbench run --quick``."""

from __future__ import annotations

import pytest

from rdbench.errors import ConfigError
from rdbench.resolution.run import plan_suite
from rdbench.suite import load_suite

SUITE = """\
suite: q
defaults:
  backbone: backbone/tiny-rs
  dataset: {name: dataset/synthetic-rs, val: 452, test: 452}
  trainer: {max_epochs: 8}
  seeds: [0, 1, 2, 3, 4]
runs:
  a: {adapter: {name: adapter/bottleneck, bottleneck: 8}, trainer: {max_epochs: 9}}
  b: {adapter: adapter/none}
  c: {adapter: adapter/full}
quick:
  only: [a, b]
  seeds: [0]
  trainer: {max_epochs: 1}
  dataset: {val: 50, test: 50}
"""


def test_quick_variant_changes_every_run_and_is_named_apart(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    full = plan_suite(path)
    quick = plan_suite(path, quick=True)
    assert len(full) == 15 and {r.plan.suite for r in full} == {"q"}
    assert [(r.plan.suite, r.plan.run, r.seed) for r in quick] == [("q-quick", "a", 0), ("q-quick", "b", 0)]
    a = quick[0]
    assert a.trainer["max_epochs"] == 1  # the quick slots win over the run's own
    assert a.components["dataset"].args["val"] == 50
    assert a.components["adapter"].args["bottleneck"] == 8  # the rest of the run is kept


@pytest.mark.parametrize("quick, message", [
    (None, "declares no `quick` variant"),
    ("  only: [zz]\n", "quick.only must list runs"),
    ("  trainr: {max_epochs: 1}\n", "did you mean 'trainer'"),
])
def test_bad_quick_is_one_line(tmp_path, quick, message):
    text = SUITE.split("quick:")[0] + ("quick:\n" + quick if quick else "")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_suite(path, quick=True)
