"""The cluster path on a real single-node SLURM: the tiny experiment through workflow/profiles/slurm.

A private cluster (tests/slurm_cluster.py: munged, slurmctld, slurmd on this
machine) runs the tiny experiment with the SLURM profile exactly as the README
tells cluster users, every job through sbatch; meanwhile the same experiment
runs locally in another folder. One job is cancelled with scancel while it
runs. The tests then check that every job was submitted with the resources the
profile asks for, that the cancelled job was resubmitted with more memory and
time and the run completed, that every result equals the local run's, and that
a cluster stops whatever happens.

Needs root and Debian's slurm-wlm and munge (make install-slurm); skipped
with the reason otherwise, except when the CI environment variable is set.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, write_tiny_experiment
from slurm_cluster import ClusterUnavailable, running_cluster, unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.system]

PROFILE = REPO / "workflow" / "profiles" / "slurm"
# Every kind of job up to feature matching: corpus, models, activation shards (GPU),
# merges, alignment, SAE training and encoding (GPU), matching of one layer pair.
TARGETS = ("results/alignment/neox--llama.tsv", "results/matching/neox--llama/layer0--layer1.tsv")
CANCELLED_RULE = "cache_activations"
SECONDS_RUNNING_BEFORE_CANCEL = 6
ACCOUNT = "sae-ci"  # accepted unchecked: there is no accounting database
# Only a guard against a hung run: the run takes 3-6 minutes on 2 cores beside the stand-in hub test.
RUN_TIMEOUT_SECONDS = 900
# A real cluster's jobs run for minutes and Snakemake's 10 s between status checks costs nothing there;
# the tiny jobs here take seconds, and each of the run's 8 waves would wait up to 10 s more for its check.
SECONDS_BETWEEN_STATUS_CHECKS = 2
# Timings differ between runs by nature; pictures and pages are renderings of compared tables.
SKIPPED_FOLDERS = ("results/benchmarks/",)
SKIPPED_SUFFIXES = (".html", ".png")
SKIPPED_NAMES = (".snakemake_timestamp",)
FLOAT_TOLERANCE = 1e-6


def ci_requires_slurm() -> bool:
    """True when the CI variable says this is a CI run, where the SLURM test must not be skipped."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    message = f"SLURM cannot run here: {reason}"
    if ci_requires_slurm():
        pytest.fail(f"{message} (CI is set: in CI the SLURM test must run)", pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------- comparing two runs


def comparable_files(workdir: Path) -> dict[str, Path]:
    """{path relative to workdir: path} of every result file worth comparing between two runs."""
    files = {}
    for path in sorted((workdir / "results").rglob("*")):
        relative = path.relative_to(workdir).as_posix()
        if (path.is_file() and not relative.startswith(SKIPPED_FOLDERS) and path.suffix not in SKIPPED_SUFFIXES
                and path.name not in SKIPPED_NAMES):
            files[relative] = path
    return files


def nested_differences(a, b, where: str) -> list[str]:
    """Where two parsed values (dicts, lists, numbers, arrays, tensors) differ; floats within FLOAT_TOLERANCE."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for key in a for d in nested_differences(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for index, (x, y) in enumerate(zip(a, b)) for d in nested_differences(x, y, f"{where}[{index}]")]
    if hasattr(a, "detach") and hasattr(b, "detach"):  # torch tensors, compared exactly
        a, b = a.detach().cpu().numpy(), b.detach().cpu().numpy()
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return [] if arrays_equal(np.asarray(a), np.asarray(b)) else [f"{where}: arrays differ"]
    if isinstance(a, float) and isinstance(b, float):
        same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
        return [] if same else [f"{where}: {a!r} != {b!r}"]
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r} != {b!r}"]


def arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and values, bit for bit (NaN equals NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def hdf5_contents(path: Path) -> dict[str, tuple]:
    """{object name: (kind, attributes, values)} of every group and dataset of an HDF5 file."""
    contents = {}
    with h5py.File(path, "r") as file:
        def record(name, item):
            values = item[()] if isinstance(item, h5py.Dataset) else None
            contents[name] = ("dataset" if values is not None else "group", dict(item.attrs), values)

        record("/", file)
        file.visititems(record)
    return contents


def hdf5_differences(path_a: Path, path_b: Path) -> list[str]:
    contents_a, contents_b = hdf5_contents(path_a), hdf5_contents(path_b)
    if set(contents_a) != set(contents_b):
        return [f"objects {sorted(contents_a)} != {sorted(contents_b)}"]
    differences = []
    for name, (kind, attributes, values) in contents_a.items():
        other_kind, other_attributes, other_values = contents_b[name]
        differences += nested_differences(attributes, other_attributes, f"{name} attributes")
        if kind == "dataset" and not arrays_equal(np.asarray(values), np.asarray(other_values)):
            differences.append(f"{name}: dataset values differ")
    return differences


def tsv_differences(path_a: Path, path_b: Path) -> list[str]:
    table_a, table_b = (pd.read_csv(path, sep="\t") for path in (path_a, path_b))
    if list(table_a.columns) != list(table_b.columns) or table_a.shape != table_b.shape:
        return [f"columns/shape {list(table_a.columns)} {table_a.shape} != {list(table_b.columns)} {table_b.shape}"]
    differences = []
    for column in table_a.columns:
        a, b = table_a[column], table_b[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            same = np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE,
                               equal_nan=True)
        else:
            same = a.astype(str).tolist() == b.astype(str).tolist()
        if not same:
            differences.append(f"column {column}: {a.tolist()[:5]} != {b.tolist()[:5]}")
    return differences


def file_differences(path_a: Path, path_b: Path) -> list[str]:
    """How two result files of the same name differ in content (empty when they hold the same values)."""
    suffix = path_a.suffix
    if suffix in (".h5", ".hdf5"):
        return hdf5_differences(path_a, path_b)
    if suffix == ".tsv":
        return tsv_differences(path_a, path_b)
    if suffix == ".json":
        return nested_differences(json.loads(path_a.read_text()), json.loads(path_b.read_text()), "")
    if suffix == ".jsonl":
        rows_a, rows_b = ([json.loads(line) for line in path.read_text().splitlines()] for path in (path_a, path_b))
        return nested_differences(rows_a, rows_b, "")
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return nested_differences(load_file(path_a), load_file(path_b), "")
    if suffix == ".pt":
        import torch

        return nested_differences(torch.load(path_a, map_location="cpu", weights_only=False),
                                  torch.load(path_b, map_location="cpu", weights_only=False), "")
    return [] if path_a.read_bytes() == path_b.read_bytes() else ["bytes differ"]


def run_differences(workdir_a: Path, workdir_b: Path) -> list[str]:
    """Every difference between the results of two runs of the same experiment."""
    files_a, files_b = comparable_files(workdir_a), comparable_files(workdir_b)
    differences = [f"only in {workdir_a.name}: {name}" for name in sorted(set(files_a) - set(files_b))]
    differences += [f"only in {workdir_b.name}: {name}" for name in sorted(set(files_b) - set(files_a))]
    for name in sorted(set(files_a) & set(files_b)):
        differences += [f"{name}: {difference}" for difference in file_differences(files_a[name], files_b[name])]
    return differences


# ---------------------------------------------------------------- running the experiment twice


def snakemake_process(workdir: Path, arguments: list[str], environment: dict, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), *arguments, *TARGETS]
    with open(log, "w") as output:
        return subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT, cwd=workdir,
                                stdin=subprocess.DEVNULL)


def cancel_one_running_job(cluster, rule: str, snakemake: subprocess.Popen, deadline: float) -> dict | None:
    """scancel the first job of `rule` that has been RUNNING for a few seconds; return its squeue row."""
    running_since = {}
    while snakemake.poll() is None and time.monotonic() < deadline:
        for job in cluster.queue():
            if job["state"] != "RUNNING" or not job["comment"].startswith(f"rule_{rule}_"):
                continue
            started = running_since.setdefault(job["job_id"], time.monotonic())
            if time.monotonic() - started >= SECONDS_RUNNING_BEFORE_CANCEL:
                cluster.run("scancel", job["job_id"])
                return job
        time.sleep(0.3)
    return None


def wait_or_kill(process: subprocess.Popen, deadline: float) -> int | None:
    """The exit code, or None after killing the process (by its id) at the deadline."""
    try:
        return process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@dataclass
class Runs:
    local: Path
    cluster: Path
    cluster_log: str
    local_log: str
    cancelled_job: dict | None
    cluster_exit: int | None
    local_exit: int | None
    seconds: float


@contextlib.contextmanager
def cluster_or_skip(**options):
    """running_cluster(), or a skip (a failure in CI) saying why SLURM cannot run here."""
    reason = unavailable_reason()
    if reason:
        skip_or_fail(reason)
    stack = contextlib.ExitStack()
    try:
        started = stack.enter_context(running_cluster(**options))
    except ClusterUnavailable as error:
        skip_or_fail(str(error))
    with stack:
        yield started


@pytest.fixture(scope="module")
def cluster():
    with cluster_or_skip() as started:
        daemons = dict(started.processes)
        yield started
    still_running = [name for name, process in daemons.items() if process.poll() is None]
    assert not still_running, f"{still_running} still running after the cluster stopped"


@pytest.fixture(scope="module")
def runs(cluster, tiny_models, tmp_path_factory) -> Runs:
    """The tiny experiment on the cluster (one job cancelled on the way) and, at the same time, locally."""
    local, on_cluster = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("cluster")
    for workdir in (local, on_cluster):
        write_tiny_experiment(workdir, tiny_models)
    environment = dict(cluster.environment)
    # Jobs inherit this shell's environment (sbatch --export=ALL): the venv's Python and the README's setting.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["HDF5_USE_FILE_LOCKING"] = "FALSE"
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT_SECONDS
    # The README's command with this cluster's site settings; no accounting database, so squeue reports job states.
    slurm_run = snakemake_process(on_cluster, [
        "--workflow-profile", str(PROFILE),
        "--default-resources", f"slurm_account={ACCOUNT}", f"slurm_partition={cluster.partition}",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1", "--verbose",
        "--seconds-between-status-checks", str(SECONDS_BETWEEN_STATUS_CHECKS),
    ], environment, on_cluster / "snakemake.log")
    # Some CPU kernels round differently at one thread than at several (one row of 201 x 32 in a
    # tiny Llama cache, by 4e-9): the local run gives each rule the cluster profile's threads.
    cluster_threads = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-threads"]
    local_run = snakemake_process(local, [
        "--set-threads", *[f"{rule}={threads}" for rule, threads in cluster_threads.items()],
        "--cores", str(max(cluster_threads.values())),  # after the list: it ends --set-threads' values
    ], environment, local / "snakemake.log")
    try:
        cancelled_job = cancel_one_running_job(cluster, CANCELLED_RULE, slurm_run, deadline)
        cluster_exit = wait_or_kill(slurm_run, deadline)
        local_exit = wait_or_kill(local_run, deadline)
    finally:
        for process in (slurm_run, local_run):
            if process.poll() is None:
                process.kill()
                process.wait()
    return Runs(local=local, cluster=on_cluster, cluster_log=(on_cluster / "snakemake.log").read_text(),
                local_log=(local / "snakemake.log").read_text(), cancelled_job=cancelled_job,
                cluster_exit=cluster_exit, local_exit=local_exit, seconds=time.monotonic() - started)


def sbatch_calls(log: str) -> list[str]:
    """Every sbatch command line the executor ran (logged with --verbose)."""
    return re.findall(r"^sbatch call: (sbatch .*)$", log, flags=re.MULTILINE)


def option(call: str, name: str) -> str | None:
    found = re.search(rf"(?:^|\s){re.escape(name)}[ =](\S+)", call)
    return found.group(1) if found else None


def finished_rules(log: str) -> list[str]:
    return sorted(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", log, flags=re.MULTILINE))


def rule_of(call: str, rules) -> str | None:
    """The rule an sbatch call is for, read from the job comment the executor writes (rule_<rule>_wildcards_...)."""
    comment = option(call, "--comment") or ""
    matching = [rule for rule in rules if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_")]
    return max(matching, key=len, default=None)


# ---------------------------------------------------------------- the tests


def test_a_cluster_stops_whatever_happens():
    """An error inside the cluster's block still ends its daemons (by their ids) and its running job."""
    with pytest.raises(RuntimeError, match="something went wrong"):
        with cluster_or_skip(n_gpus=0) as cluster:
            daemons = dict(cluster.processes)
            folder = cluster.folder
            job_id = cluster.run("sbatch", "--parsable", "--output=/dev/null", "--wrap", "sleep 300").stdout.strip()
            deadline = time.monotonic() + 30
            while cluster.queue()[0]["state"] != "RUNNING" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert cluster.queue() == [{"job_id": job_id, "state": "RUNNING", "name": "wrap", "comment": "(null)"}]
            raise RuntimeError("something went wrong")
    assert sorted(daemons) == ["munged", "slurmctld", "slurmd"]
    assert all(process.poll() is not None for process in daemons.values())
    assert not folder.exists()
    # The job's process gets its signal as slurmd stops; give it a moment to be gone.
    deadline = time.monotonic() + 15
    while (sleepers := subprocess.run(["pgrep", "-f", "^sleep 300$"], capture_output=True, text=True).stdout.split()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not sleepers, "the running job outlived the cluster"


def test_the_run_completes_and_every_job_went_through_sbatch(runs):
    assert runs.local_exit == 0, runs.local_log[-3000:]
    assert runs.cluster_exit == 0, f"after {runs.seconds:.0f} s:\n{runs.cluster_log[-5000:]}"
    submitted = set(re.findall(r"^Job (\d+) has been submitted with SLURM jobid \d+", runs.cluster_log, re.MULTILINE))
    finished = set(re.findall(r"^Finished jobid: (\d+) ", runs.cluster_log, flags=re.MULTILINE))
    assert finished and finished <= submitted, "a job finished without being submitted to SLURM"
    assert finished_rules(runs.cluster_log) == finished_rules(runs.local_log), "not the same jobs as the local run"


def test_jobs_ask_for_what_the_profile_says(runs):
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    gpu_rules = {rule for rule, resources in profile["set-resources"].items() if resources.get("gpu")}
    calls = sbatch_calls(runs.cluster_log)
    assert len(calls) == len(finished_rules(runs.cluster_log)) + 1  # the cancelled job was submitted twice
    for call in calls:
        rule = rule_of(call, profile["set-resources"])
        assert rule is not None, f"{call}: rule missing from the profile's set-resources"
        assert option(call, "-A") == ACCOUNT and option(call, "-p") == "debug", call
        assert option(call, "--mem") and option(call, "-t"), call
        assert option(call, "--job-name").startswith("sae_"), call
        assert "--gres" not in call, call
        assert option(call, "--gpus") == ("1" if rule in gpu_rules else None), call
        threads = profile["set-threads"].get(rule)
        assert threads is None or option(call, "--cpus-per-task") == str(threads), call
    submitted_rules = {rule_of(call, profile["set-resources"]) for call in calls}
    assert gpu_rules & submitted_rules, "no GPU job was submitted"
    # TARGETS need these rules, each with set-threads: their --cpus-per-task was checked above.
    threaded = {"prepare_model", "cache_activations", "train_sae", "encode_features", "match_features"}
    assert threaded <= set(profile["set-threads"]) and threaded <= submitted_rules, sorted(submitted_rules)


def test_a_cancelled_job_is_resubmitted_with_more_memory_and_time(runs):
    job = runs.cancelled_job
    assert job is not None, f"no {CANCELLED_RULE} job was seen running:\n{runs.cluster_log[-3000:]}"
    assert f"SLURM-job '{job['job_id']}' failed, SLURM status is: 'CANCELLED'" in runs.cluster_log
    attempts = [call for call in sbatch_calls(runs.cluster_log) if option(call, "--comment") == job["comment"]]
    assert len(attempts) == 2, attempts
    first, second = attempts
    assert int(option(second, "--mem")) == 2 * int(option(first, "--mem"))
    assert int(option(second, "-t")) == 2 * int(option(first, "-t"))
    # SLURM's log of the failed job is kept in the profile's log folder, under the rule's name.
    kept_logs = list((runs.cluster / "logs" / "slurm" / f"rule_{CANCELLED_RULE}").rglob(f"{job['job_id']}.log"))
    assert len(kept_logs) == 1 and f"JOB {job['job_id']} ON" in kept_logs[0].read_text(), kept_logs
    assert "CANCELLED" in kept_logs[0].read_text()
    assert runs.cluster_exit == 0


def test_outputs_equal_the_local_run(runs):
    assert runs.cluster_exit == 0 and runs.local_exit == 0
    files = comparable_files(runs.cluster)
    assert {name for name in files if name.endswith(".h5")} and {name for name in files if name.endswith(".tsv")}
    differences = run_differences(runs.local, runs.cluster)
    assert not differences, "\n".join(differences[:20])


def test_the_comparison_sees_a_changed_value(runs, tmp_path):
    """The check above can fail: one changed number in one dataset is reported."""
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(runs.cluster / "results", changed / "results")
    cache = next(iter(sorted((changed / "results" / "activations").rglob("*.h5"))))
    with h5py.File(cache, "r+") as file:
        file["activations"][0, 0] += 1e-3
    differences = run_differences(runs.local, changed)
    assert differences == [f"{cache.relative_to(changed).as_posix()}: activations: dataset values differ"]
