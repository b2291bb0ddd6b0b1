"""The ``rdbench`` command: run, validate, reproduce, list, compare, report, tune, bench, data (verify, overlap).

User errors (:class:`rdbench.errors.RdbenchError`) print one line, ``rdbench: <problem>``, and
exit with status 2 (1 when runs failed); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import sys
from pathlib import Path

from rdbench.errors import Interrupted, RdbenchError, RunFailed


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _names(value: str) -> list[str]:
    names = _csv(value)
    if not names:  # an empty --only would otherwise mean "no filter": the whole suite
        raise argparse.ArgumentTypeError(f"names no run ({value!r}); give comma-separated run names")
    return names


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes integers separated by commas, got {value!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"names no seed ({value!r}); give comma-separated integers")
    return seeds


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (and where to find the usage) rather than the
    whole usage block above it."""

    def error(self, message: str):
        command = self.prog.removeprefix("rdbench").strip()
        self.exit(2, f"rdbench: {command + ': ' if command else ''}{message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rdbench", description="PEFT benchmark for remote-sensing image-text retrieval.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def suite_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("suite", help="suite YAML file")
        p.add_argument("--only", type=_names, help="comma-separated run names")
        p.add_argument("--seeds", type=_seeds, help="comma-separated seeds (replaces the suite's)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a slot, e.g. trainer.max_epochs=1 or runs.full.optimizer.lr=1e-5")
        p.add_argument("--quick", action="store_true",
                       help="the suite's documented short variant (its `quick:` section), recorded as <suite>-quick")

    p = sub.add_parser("run", help="run a suite (skips runs already done)")
    suite_args(p)
    p.add_argument("--overwrite", action="store_true", help="rerun runs that already have a successful record")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--jobs", type=int, default=1, help="run independent runs in N processes (each its share of CPU threads, or its own GPU)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: in this process (and --jobs workers); slurm: one SLURM array task per run and seed "
                   "without a successful record, through submitit (docs/scaling.md)")
    p.add_argument("--partition", help="with --launcher slurm: the SLURM partition (default: the cluster's default)")
    p.add_argument("--gpus-per-task", type=int, default=0, metavar="N", help="with --launcher slurm: GPUs of each task")
    p.add_argument("--cpus-per-task", type=int, default=1, metavar="N", help="with --launcher slurm: CPU cores of each task")
    p.add_argument("--time", type=int, default=60, metavar="MIN",
                   help="with --launcher slurm: each task's time limit in minutes (a task near it is requeued and resumes)")
    p.add_argument("--no-wait", action="store_true",
                   help="with --launcher slurm: submit and return; run the command again to see or finish what is left")

    p = sub.add_parser("tune", help="hyper-parameter search over a suite's `search:` space with Optuna")
    p.add_argument("suite", help="suite YAML file with a `search:` section")
    p.add_argument("--run", required=True, help="the run whose hyper-parameters are searched")
    p.add_argument("--trials", type=int, required=True, help="trials in the study in total, across all workers")
    p.add_argument("--study", help="study name (default: <suite>-<run>)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite file results/<suite>/optuna.db; journal:///path for a journal file)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--results", default="results")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("validate", help="resolve every run of a suite and check every argument, building nothing")
    suite_args(p)
    p.add_argument("--show", action="store_true", help="print each run's resolved config")

    p = sub.add_parser("reproduce", help="rerun a run from its config.yaml alone and compare the metrics with its record")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding config.yaml and record.json")
    p.add_argument("--results", help="scratch results folder for the rerun (default: a new temporary folder)")
    p.add_argument("--tolerance", type=float, metavar="T",
                   help="largest accepted difference per metric, in points (default: 0 on CPU, 0.5 on an accelerator)")

    p = sub.add_parser("list", help="list registered components; with an exact key, every argument of it")
    p.add_argument("pattern", nargs="?", default="",
                   help="substring or kind/ prefix to filter keys; an exact key (adapter/cmaa) shows its arguments "
                   "with type, default and description")
    p.add_argument("--params", metavar="ARCHITECTURE",
                   help="count each component's trainable parameters on a randomly initialised open_clip model, e.g. ViT-B-32")
    p.add_argument("--format", default="simple", help="tabulate format: simple, github, latex, ...")
    p.add_argument("--markdown", action="store_true",
                   help="the argument reference of the matching keys as Markdown (docs/components.md)")

    p = sub.add_parser("compare", help="tables, significance tests and plots from run records (docs/compare.md)")
    p.add_argument("results", nargs="*", default=["results"], metavar="DIR",
                   help="results folders, e.g. one per machine, read into one table (default: results)")
    p.add_argument("--suite", help="only this suite")
    p.add_argument("--runs", type=_csv, metavar="PATTERNS",
                   help="only runs whose name matches one of these comma-separated globs, e.g. 'lora*,full'")
    p.add_argument("--exclude", type=_csv, metavar="PATTERNS", help="leave out runs whose name matches one of these globs")
    p.add_argument("--trials", action="store_true", help="include tuning trials (tune-<study>/trial<k>; left out by default)")
    p.add_argument("--format", default="table", help="table (terminal), markdown, latex, html (one self-contained page with the figures), csv or parquet (needs --output)")
    p.add_argument("--output", metavar="FILE", help="write the table to FILE instead of printing it")
    p.add_argument("--baseline", metavar="RUN", help="add a delta column per metric against RUN, with a significance test")
    p.add_argument("--columns", type=_csv, metavar="NAMES",
                   help="comma-separated columns: default, trainable, test/... or val/... metrics, "
                   "train_time_s, peak_mem_bytes, total_params, train/loss/<term>, diagnostics or diag/... "
                   "(gradient balance, modality gap, alignment, uniformity; docs/diagnostics.md) (default: default)")
    p.add_argument("--references", nargs="?", const=True, default=False, type=_csv, metavar="NAMES",
                   help="add published rows for the suite's dataset (rsicd, rsitmd); optionally only these "
                   "published files (rdbench/results/published), e.g. pe-rsitr,georsclip")
    p.add_argument("--allow-other-splits", action="store_true",
                   help="with --references, show published rows even beside rows measured on another test split "
                   "than the published one (marked ⋄; refused otherwise)")
    p.add_argument("--tie-rule", default="strict", metavar="RULE",
                   help="test recalls under rdbench's strict tie rule (default) or a public evaluation code's: "
                   "vsepp, pir, clip_benchmark (docs/metric.md)")
    p.add_argument("--plot", metavar="DIR", help="write PNG figures (Pareto, ablation, recall@K, gradient ratio, gap against mR) into DIR")
    p.add_argument("--bootstrap", type=int, metavar="B",
                   help="bootstrap resamples (default: scaled to the table's number of tests, "
                   "max(1000, 20 m / 0.05), at most 100000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, metavar="SEED", help="bootstrap random seed (default: 0)")

    p = sub.add_parser("report", help="generate a results page (docs/results.md) from run records (docs/compare.md)")
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="results folder(s), read into one page")
    p.add_argument("--suite", dest="suites", action="append", type=_csv, metavar="S",
                   help="only this suite (repeatable, or comma-separated; default: every suite found)")
    p.add_argument("--baseline", dest="baselines", action="append", metavar="SUITE=RUN",
                   help="compare SUITE with RUN (repeatable); a bare RUN applies to every suite that has it "
                   "(default: each suite's run named 'baseline', if any)")
    p.add_argument("--out", default="docs/results.md", metavar="FILE",
                   help="where to write the page (default: docs/results.md; '-' prints it)")
    p.add_argument("--figures", metavar="DIR", help="draw PNG figures into DIR and link them (needs matplotlib)")

    p = sub.add_parser("bench", help="measure rdbench's fast paths as side-by-side ratios (docs/performance.md)")
    p.add_argument("--quick", action="store_true", help="batch 8 and fewer repetitions: a fast look (a few minutes)")
    p.add_argument("--output", metavar="FILE",
                   help="write the report there (default: docs/performance.md, or nothing with --only)")
    p.add_argument("--only", type=_csv, metavar="NAMES", help="comma-separated: peft, overhead, diagnostics, evaluation, cache, data, runtime, curves")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")

    from rdbench.commands.data import add_data_commands  # `rdbench data verify|overlap`

    add_data_commands(sub)
    return parser


def cmd_run(args) -> int:
    from rdbench.suite import parse_set
    from rdbench.training.interrupt import stop_on_signals
    from rdbench.training.runner import run_suite

    results = Path(args.results)
    _check_writable(results)
    if args.jobs < 1:
        raise RdbenchError(f"--jobs must be at least 1, got {args.jobs}")
    if args.launcher == "slurm":
        return launch_slurm(args, results)
    slurm_only = [flag for flag, value in (("--partition", args.partition), ("--gpus-per-task", args.gpus_per_task),
                                           ("--cpus-per-task", args.cpus_per_task != 1), ("--time", args.time != 60),
                                           ("--no-wait", args.no_wait)) if value]
    if slurm_only:
        raise RdbenchError(f"{slurm_only[0]} goes with --launcher slurm")
    with stop_on_signals():
        workers = start_workers(args) if args.jobs > 1 else []
        try:
            outcome = run_suite(args.suite, results=results, only=args.only, seeds=args.seeds,
                                overrides=parse_set(args.overrides), overwrite=args.overwrite, quick=args.quick)
        except Interrupted as stop:
            for worker in workers:  # a scheduler may have signalled this process alone
                if worker.poll() is None:
                    worker.send_signal(stop.signum)
            for worker in workers:
                worker.wait()
            raise
        failed_workers = sum(w.wait() != 0 for w in workers)
    changed = f", {outcome.changed} changed since their records (not rerun)" if outcome.changed else ""
    print(f"{outcome.done} run(s) done, {outcome.skipped} skipped, {outcome.failed} failed{changed}; records in {results}/"
          + (f" ({len(workers)} more worker process(es), {failed_workers} reporting failures)" if workers else ""))
    if outcome.failed or failed_workers:
        raise RunFailed(f"{outcome.failed} run(s) failed; their record.json says why")
    if outcome.changed:
        raise RdbenchError(f"{outcome.changed} run(s) have records of another config (keys named above); "
                           "--overwrite reruns them, or restore the suite")
    return 0


def launch_slurm(args, results: Path) -> int:
    """``--launcher slurm``: the suite as a SLURM job array (rdbench/launch/slurm.py)."""
    from rdbench.launch.slurm import SlurmOptions, launch
    from rdbench.suite import parse_set

    if args.jobs != 1:
        raise RdbenchError("--jobs goes with --launcher local (SLURM runs the array's tasks side by side)")
    for flag, value, low in (("--cpus-per-task", args.cpus_per_task, 1), ("--gpus-per-task", args.gpus_per_task, 0),
                             ("--time", args.time, 1)):
        if value < low:
            raise RdbenchError(f"{flag} must be at least {low}, got {value}")
    options = SlurmOptions(partition=args.partition, gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task,
                           time_min=args.time, wait=not args.no_wait)
    counts = launch(args.suite, results=results, options=options, only=args.only, seeds=args.seeds,
                    overrides=parse_set(args.overrides), overwrite=args.overwrite, quick=args.quick)
    if not options.wait:
        return 0
    print(f"{counts['done']} run(s) done, {counts['skipped']} skipped, {counts['failed']} failed; records in {results}/")
    if counts["failed"]:
        raise RunFailed(f"{counts['failed']} run(s) failed or ended without a record; their record.json or SLURM log says why")
    return 0


def start_workers(args) -> list:
    """``--jobs N``: N - 1 more ``rdbench run`` processes on the same suite and results folder.

    They share the runs through the per-run locks (the same mechanism that lets two users start
    one suite), so the records are exactly those of a serial run. Each process gets its share
    of the CPU threads, or its own GPU when there are several.
    """
    import subprocess

    import torch

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(threads)
    gpus = torch.cuda.device_count()
    argv = list(args.argv)
    if "--jobs" in argv:
        i = argv.index("--jobs")
        del argv[i : i + 2]
    argv = [a for a in argv if not a.startswith("--jobs=")]
    workers = []
    for j in range(1, args.jobs):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "RDBENCH_THREADS": str(threads)}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(j % gpus)
        workers.append(subprocess.Popen([sys.executable, "-m", "rdbench", *argv], env=env))
    if gpus > 1:
        torch.cuda.set_device(0)
    return workers


def _check_writable(folder: Path) -> None:
    """Fail before any training if records could not be written there."""
    probe = folder.resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RdbenchError(f"{folder}: results folder cannot be created ({probe} is a file)")
    if not os.access(probe, os.W_OK):
        raise RdbenchError(f"{folder}: results folder is not writable")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise RdbenchError(f"{folder}: results folder is not writable ({exc.strerror})") from None


def cmd_tune(args) -> int:
    from rdbench.suite import parse_set
    from rdbench.tune import summary, tune

    _check_writable(Path(args.results))
    result = tune(args.suite, args.run, args.trials, study_name=args.study, storage=args.storage,
                  timeout=args.timeout, results=args.results, overrides=parse_set(args.overrides))
    print("\n".join(summary(result)))
    if result.best_params is None:
        raise RdbenchError("no trial completed; see the trials' record.json files")
    return 0


def cmd_validate(args) -> int:
    import yaml

    from rdbench.resolution.inputs import missing_inputs
    from rdbench.resolution.run import plan_suite
    from rdbench.suite import load_suite, parse_set

    runs = plan_suite(args.suite, only=args.only, seeds=args.seeds, overrides=parse_set(args.overrides), quick=args.quick)
    for line in dict.fromkeys(line for run in runs for line in missing_inputs(run)):
        print(f"warning: {line} (the run would fail)", file=sys.stderr)
    suite = load_suite(args.suite)
    if suite.search is not None:
        from rdbench.tune import check_space

        check_space(suite)
    for run in runs:
        keys = ", ".join(f"{slot}={r.key or r.record()['class_path']}" for slot, r in run.components.items())
        print(f"ok  {run.plan.suite}/{run.plan.label}: {keys}")
        if args.show:
            print(yaml.safe_dump(run.config(), sort_keys=False).rstrip().replace("\n", "\n    ").join(["    ", ""]))
    from rdbench.resolution.select import budget_note

    note = budget_note({run.plan.run: run.select for run in runs})
    if note:
        print(note)
    print(f"{args.suite}: {len(runs)} run(s) valid")
    return 0


def cmd_reproduce(args) -> int:
    from rdbench.training.reproduce import reproduce

    outcome = reproduce(Path(args.run_dir), results=Path(args.results) if args.results else None, tolerance=args.tolerance)
    for line in outcome.lines():
        print(line)
    if outcome.differing:
        raise RunFailed(f"{args.run_dir}: {len(outcome.differing)} metric(s) differ by more than {outcome.tolerance:g}: "
                        + ", ".join(outcome.differing))
    return 0


def cmd_list(args) -> int:
    from tabulate import tabulate

    from rdbench.registry import REGISTRY

    if args.markdown:
        from rdbench.components_reference import markdown_reference, select_entries

        print(markdown_reference(select_entries(args.pattern)), end="")
        return 0
    if args.pattern and not args.params:
        from rdbench.describe import describe_key

        text = describe_key(args.pattern)  # an exact key: its arguments; None: the table below
        if text is not None:
            print(text, end="")
            return 0
    if args.params:
        from rdbench.accounting import count_table

        rows = [(key, f"{count:,}", source) for key, count, source in count_table(args.params, args.pattern)]
        if not rows:
            raise RdbenchError(f"no countable component key matches {args.pattern!r}")
        print(tabulate(rows, headers=["key", f"trainable on {args.params}", "source"], tablefmt=args.format, colalign=("left", "right", "left")))
        return 0
    rows = []
    for entry in REGISTRY.entries():
        if args.pattern and args.pattern not in entry.key:
            continue
        desc = entry.description + (f" [{', '.join(entry.tags)}]" if entry.tags else "")
        rows.append((entry.key, entry.source, desc))
    if not rows:
        raise RdbenchError(f"no component key matches {args.pattern!r}")
    print(tabulate(rows, headers=["key", "source", "description"], tablefmt=args.format, maxcolwidths=[None, None, 70]))
    return 0


def cmd_compare(args) -> int:
    from rdbench.results.compare import compare

    if args.bootstrap is not None and args.bootstrap < 1:
        raise RdbenchError(f"--bootstrap: needs a positive number of resamples, got {args.bootstrap}")
    result = compare(args.results, suite=args.suite, fmt=args.format, baseline=args.baseline,
                     columns=args.columns, references=args.references, plot_dir=args.plot,
                     output=args.output, n_boot=args.bootstrap, seed=args.bootstrap_seed, tie_rule=args.tie_rule,
                     runs=args.runs, exclude=args.exclude, trials=args.trials,
                     allow_other_splits=args.allow_other_splits)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in result.notes:
        print(note, file=sys.stderr)
    # Files go to stderr too, so that stdout stays exactly the table a user redirects or pastes.
    for path in result.files[1 if args.output else 0:]:
        print(f"wrote {path}", file=sys.stderr)
    print(result.text, end="")
    return 0


def cmd_report(args) -> int:
    from rdbench.results.report import report, write_report

    suites = [name for group in args.suites or [] for name in group] or None
    to_stdout = args.out == "-"
    result = report(args.results, suites=suites, baselines=args.baselines,
                    out=None if to_stdout else args.out, figures=args.figures)
    if not to_stdout:
        write_report(result, args.out)
    for warning in result.warnings:
        print(f"warning: {warning}" if not warning.startswith("note:") else warning, file=sys.stderr)
    for path in result.files:
        print(f"wrote {path}", file=sys.stderr if to_stdout else sys.stdout)
    if to_stdout:
        print(result.text, end="")
    return 0


def cmd_bench(args) -> int:
    from rdbench.bench import report
    from rdbench.bench.common import Settings

    unknown = [name for name in args.only or [] if name not in report.SECTIONS]
    if unknown:
        raise RdbenchError(f"--only: unknown figure(s) {', '.join(unknown)}; choose from {', '.join(report.SECTIONS)}")
    if args.threads is not None:
        if args.threads < 1:
            raise RdbenchError(f"--threads: needs a positive number, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    output = Path(args.output) if args.output else (None if args.only else Path("docs/performance.md"))
    if output is not None:
        _check_writable(output.parent)
    settings = Settings.make(args.quick, args.threads)
    figures, context = report.run(settings, args.only)
    if output is not None:
        text = report.render(figures, context, settings, report.existing_gpu_section(output))
        report.write(output, text)
        print(f"wrote {output}")
    missed = [f.name for f in figures if f.holds is False]
    if missed:  # a measurement, not a test: reported, and the exit status stays 0
        print(f"{len(missed)} target(s) not met: {'; '.join(missed)}")
    return 0


def cmd_data(args) -> int:
    from rdbench.commands.data import cmd_data as run_data_command

    return run_data_command(args)


COMMANDS = {"tune": cmd_tune, "run": cmd_run, "validate": cmd_validate, "reproduce": cmd_reproduce, "list": cmd_list,
            "compare": cmd_compare, "report": cmd_report, "data": cmd_data, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (printed, exit 2) or --help (exit 0)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if os.environ.get("RDBENCH_THREADS"):  # a --jobs worker's share of the CPU
        import torch

        torch.set_num_threads(int(os.environ["RDBENCH_THREADS"]))
    try:
        return COMMANDS[args.command](args)
    except RdbenchError as exc:
        if args.debug:
            raise
        print(f"rdbench: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rdbench: interrupted", file=sys.stderr)
        return 130
    except Interrupted as exc:  # SIGTERM or SIGINT (rdbench.training.interrupt)
        print(f"rdbench: {exc}; the same command resumes", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
