"""Plugins through entry points, with packages really installed by pip (into a folder on
PYTHONPATH, so the test environment itself is left as it was)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # pip-installs packages, runs rdbench in subprocesses

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "rdbench-plugin-example"
TINY = [
    "--set", "backbone={name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}",
    "--set", "dataset.train=12", "--set", "dataset.val=6", "--set", "dataset.test=6",
    "--set", "trainer.max_epochs=1", "--set", "trainer.enable_progress_bar=false",
    "--set", "data.batch_size=8", "--set", "data.eval_batch_size=16",
]


def pip_install(source: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )


def write_package(root: Path, name: str, entry: str, module: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.3.0"
        [project.entry-points."rdbench.adapter"]
        {entry}
        [tool.setuptools]
        py-modules = ["{name.replace('-', '_')}"]
        """))
    (root / name / f"{name.replace('-', '_')}.py").write_text(module)
    return root / name


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugins")
    good = tmp / "good"
    source = tmp / "example-src"  # a copy: pip's in-tree build would leave build/ in the checkout
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pip_install(source, good)
    broken_src = write_package(tmp / "src", "broken-plugin", 'broken = "broken_plugin:BrokenAdapter"',
                               "import missing_dependency_xyz\n")
    broken = tmp / "broken"
    pip_install(broken_src, broken)
    clash_src = write_package(tmp / "src2", "clash-plugin", 'bottleneck = "clash_plugin:Clash"', "class Clash: pass\n")
    clash = tmp / "clash"
    pip_install(clash_src, clash)
    return {"good": good, "broken": broken, "clash": clash, "tmp": tmp}


def rdbench(*args: str, paths: list[Path], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RDBENCH_DISABLE_PLUGINS"}
    environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "rdbench", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


def test_list_shows_the_plugin_with_its_distribution(site):
    out = rdbench("list", "gated", paths=[site["good"]], cwd=site["tmp"])
    assert out.returncode == 0, out.stderr
    assert "adapter/gated-mlp" in out.stdout and "plugin:rdbench-plugin-example==0.1.0" in out.stdout
    off = rdbench("list", "gated", paths=[site["good"]], cwd=site["tmp"], RDBENCH_DISABLE_PLUGINS="1")
    assert off.returncode == 2 and "no component key matches" in off.stderr


def test_example_suite_runs_and_records_the_plugin(site):
    suite = EXAMPLE / "suites" / "plugin-vs-builtin.yaml"
    out = rdbench("run", str(suite), "--results", "results", *TINY, paths=[site["good"]], cwd=site["tmp"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    record = json.loads((site["tmp"] / "results/plugin-vs-builtin/plugin-gated-mlp/seed0/record.json").read_text())
    assert record["status"] == "success"
    adapter = record["components"]["adapter"]
    assert adapter["key"] == "adapter/gated-mlp" and adapter["source"] == "plugin:rdbench-plugin-example==0.1.0"
    assert adapter["class_path"] == "rdbench_plugin_example.adapter.GatedMLPAdapter"
    loss = json.loads((site["tmp"] / "results/plugin-vs-builtin/plugin-gated-mlp+margin/seed0/record.json").read_text())
    # a single term runs as the only term of loss/composite; the term keeps its plugin source
    terms = loss["components"]["loss"]["init_args"]["terms"]
    assert [t["source"] for t in terms.values()] == ["plugin:rdbench-plugin-example==0.1.0"]


def test_the_example_packages_own_tests_pass(site):
    environ = {k: v for k, v in os.environ.items() if k != "RDBENCH_DISABLE_PLUGINS"}
    environ["PYTHONPATH"] = str(site["good"])
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                         cwd=site["tmp"], env=environ, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]


def test_the_registry_driven_test_covers_the_plugin(site):
    """Installing a plugin is all it takes for tests/test_every_component.py to build its
    components from their examples and check them by their kinds' contracts."""
    environ = {**os.environ, "PYTHONPATH": str(site["good"]), "RDBENCH_DISABLE_PLUGINS": "0"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                          str(ROOT / "tests" / "test_every_component.py"), "-k", "gated-mlp or cosine-margin"],
                         cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    for key in ("adapter/gated-mlp", "loss/cosine-margin"):
        assert f"PASSED tests/test_every_component.py::test_every_component_works_from_its_example[{key}]" in out.stdout


def test_a_broken_plugin_fails_only_its_runs(site):
    suite = site["tmp"] / "mixed.yaml"
    suite.write_text(textwrap.dedent("""\
        suite: mixed
        defaults: {backbone: backbone/tiny-rs, dataset: dataset/synthetic-rs}
        runs:
          builtin: {adapter: {name: adapter/bottleneck, bottleneck: 4}}
          broken: {adapter: adapter/broken}
        """))
    listing = rdbench("list", "adapter/", paths=[site["broken"]], cwd=site["tmp"])
    assert listing.returncode == 0 and "plugin:broken-plugin==0.3.0" in listing.stdout
    validate = rdbench("validate", str(suite), "--only", "builtin", paths=[site["broken"]], cwd=site["tmp"])
    assert validate.returncode == 0, validate.stderr
    out = rdbench("run", str(suite), "--results", "results", *TINY, paths=[site["broken"]], cwd=site["tmp"])
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "rdbench: 1 run(s) failed; their record.json says why"
    assert "Traceback" not in out.stderr and "WARNING" not in out.stderr
    ok = json.loads((site["tmp"] / "results/mixed/builtin/seed0/record.json").read_text())
    bad = json.loads((site["tmp"] / "results/mixed/broken/seed0/record.json").read_text())
    assert ok["status"] == "success" and bad["status"] == "failed"
    assert "plugin adapter/broken from broken-plugin==0.3.0 failed to import: ModuleNotFoundError" in bad["error"]
    assert "missing_dependency_xyz" in bad["error"] and "\n" not in bad["error"]


def test_a_colliding_plugin_is_an_error_naming_both(site):
    out = rdbench("list", paths=[site["clash"]], cwd=site["tmp"])
    assert out.returncode == 2
    assert "adapter/bottleneck is registered twice: by builtin and by plugin:clash-plugin==0.3.0" in out.stderr
