"""A single-node SLURM cluster on this machine, started and stopped by a test.

`running_cluster()` writes a private munge key, `slurm.conf` and `gres.conf`
into a new temporary folder, starts `munged`, `slurmctld` and `slurmd` in the
foreground as child processes, waits until `sinfo` shows the node idle, and
yields a `SlurmCluster`. On exit, whatever happened, it cancels the jobs still
queued and ends the three daemons by the ids of the processes it started.

Everything is private to the folder: munge listens on its own socket with its
own key, SLURM on two free ports, with state, spool, pid and log files in the
folder. A munged or SLURM already running on the machine is neither used nor
touched. Clients (`sbatch`, `squeue`, Snakemake) find the cluster through the
`SLURM_CONF` variable of `SlurmCluster.environment`. The slurm-jobstep plugin
(0.6) removes every `SLURM_*` variable, `SLURM_CONF` included, before the `srun`
it runs inside each job; a real cluster's `srun` then finds /etc/slurm/slurm.conf,
so `environment` puts a one-line `srun` first on PATH that sets `SLURM_CONF` again.

The node advertises the resources of a typical GPU node (`VIRTUAL_CPUS`,
`VIRTUAL_MEMORY_MB`, `VIRTUAL_GPUS`) whatever the machine has
(`SlurmdParameters=config_overrides`), so a workflow profile written for a real
cluster is submitted unmodified: every `--gpus`, `--mem`, `--cpus-per-task` and
`-t` it produces is checked and scheduled by the real `sbatch` and
`slurmctld`. Nothing enforces them (task/none, no cgroups); the GPUs are
character devices that read like /dev/null. Needs root, Debian's `slurm-wlm`
and `munge` (`make install-slurm`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REQUIRED_PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel",
                     "sinfo", "scontrol")
PARTITION = "debug"
VIRTUAL_CPUS = 16
VIRTUAL_MEMORY_MB = 512_000
VIRTUAL_GPUS = 2
# A finished job stays visible to `squeue --states=all` this long: the executor's
# only way to learn that a job ended, since there is no accounting database.
MIN_JOB_AGE_SECONDS = 600


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run on this machine; the message says why and what to do."""


def unavailable_reason() -> str | None:
    """Why a private SLURM cluster cannot start here, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root: slurmd must run as root to start jobs"
    missing = [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]
    if missing:
        return f"{', '.join(missing)} not found: run `make install-slurm` (apt-get install slurm-wlm munge) as root"
    return None


def slurm_conf_text(*, folder: Path, hostname: str, controller_port: int, node_port: int, munge_socket: Path,
                    n_gpus: int) -> str:
    """The slurm.conf of a one-node cluster whose files all live in `folder`."""
    gres = f" Gres=gpu:{n_gpus}" if n_gpus else ""
    lines = [
        "ClusterName=sae-test",
        f"SlurmctldHost={hostname}(127.0.0.1)",
        f"SlurmctldPort={controller_port}",
        f"SlurmdPort={node_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        # No cgroups, no accounting database: what a container without systemd can run.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        # Advertise the node below, not the machine's own CPUs and memory.
        "SlurmdParameters=config_overrides",
        "GresTypes=gpu",
        "ReturnToService=2",
        f"MinJobAge={MIN_JOB_AGE_SECONDS}",
        # A cancelled job is killed 2 s after SIGTERM instead of 30 s: the retry starts sooner.
        "KillWait=2",
        "InactiveLimit=0",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        f"NodeName={hostname} NodeAddr=127.0.0.1 CPUs={VIRTUAL_CPUS} RealMemory={VIRTUAL_MEMORY_MB}{gres}"
        " State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={hostname} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def gres_conf_text(hostname: str, gpu_devices: list[Path]) -> str:
    """gres.conf naming one device file per GPU (SLURM accepts GPUs only with a device file)."""
    return "".join(f"NodeName={hostname} Name=gpu File={device}\n" for device in gpu_devices)


def srun_wrapper_text(slurm_conf: Path, srun: str) -> str:
    """A shell script that runs the real `srun` with SLURM_CONF pointing at this cluster."""
    return f'#!/bin/sh\nSLURM_CONF="{slurm_conf}" exec "{srun}" "$@"\n'


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SlurmCluster:
    """A running private cluster: pass `environment` to every process that talks to it."""

    folder: Path
    environment: dict[str, str]
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command (`squeue`, `scancel`, ...) against this cluster."""
        return subprocess.run(command, env=self.environment, capture_output=True, text=True, timeout=30,
                              check=check)

    def queue(self) -> list[dict[str, str]]:
        """Jobs still pending or running: [{'job_id', 'state', 'name', 'comment'}]."""
        listing = self.run("squeue", "--noheader", "--format=%i|%T|%j|%k").stdout
        rows = [line.split("|", 3) for line in listing.splitlines() if line.strip()]
        return [dict(zip(("job_id", "state", "name", "comment"), row)) for row in rows]

    def log_tail(self, n_lines: int = 15) -> str:
        """The end of each daemon's log, to explain a failure."""
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n_lines:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel leftover jobs, then end the daemons this cluster started, by their process ids."""
        if self.processes.get("slurmctld") is not None and self.processes["slurmctld"].poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                leftover = [job["job_id"] for job in self.queue()]
                if leftover:
                    self.run("scancel", *leftover, check=False)
                    deadline = time.monotonic() + 20
                    while self.queue() and time.monotonic() < deadline:
                        time.sleep(0.5)
        # Reverse start order: the node, the controller, then the authentication they use.
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        # A job step outlives slurmd by design (slurmstepd is its own process), and under load the scancel above
        # can go unanswered: whatever still carries this cluster's configuration in its environment was started
        # by it (daemons' children, job steps, the jobs' own processes) and ends here.
        _end_processes_of(self.environment["SLURM_CONF"])


def _end_processes_of(slurm_conf: str, timeout: float = 10.0) -> None:
    """SIGKILL every process (but this one) whose environment has SLURM_CONF=`slurm_conf`, and everything they
    started (a job's own processes may have had their SLURM_* variables taken away), then wait for them."""
    import signal

    marker = f"SLURM_CONF={slurm_conf}".encode()

    def started_by_cluster() -> set[int]:
        parent, carriers = {}, set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if stat[stat.rindex(")") + 2] == "Z":
                    continue  # a zombie: already ended
                parent[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    carriers.add(int(entry.name))
        found, grew = set(carriers), True
        while grew:  # and their descendants
            grown = {pid for pid, ppid in parent.items() if ppid in found} - found
            found |= grown
            grew = bool(grown)
        return found - {os.getpid()}

    for pid in started_by_cluster():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while started_by_cluster() and time.monotonic() < deadline:
        time.sleep(0.2)


def _start_daemon(cluster: SlurmCluster, name: str, command: list[str]) -> None:
    output = open(cluster.folder / f"{name}.out", "w")
    cluster.processes[name] = subprocess.Popen(command, env=cluster.environment, stdout=output,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output.close()  # the child holds its own copy


def _wait_until(condition, what: str, cluster: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            if process.poll() is not None:
                output = (cluster.folder / f"{name}.out").read_text(errors="replace")[-2000:]
                raise ClusterUnavailable(f"{name} exited with {process.returncode} while waiting for {what}: "
                                         f"{output}\n{cluster.log_tail()}")
        if condition():
            return
        time.sleep(0.3)
    raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.log_tail()}")


def _make_gpu_devices(folder: Path, n_gpus: int) -> list[Path]:
    """Character devices that behave like /dev/null, one per advertised GPU."""
    devices = []
    for index in range(n_gpus):
        device = folder / f"gpu{index}"
        try:
            os.mknod(device, 0o644 | 0o020000, os.makedev(1, 3))  # S_IFCHR, the numbers of /dev/null
        except OSError as error:
            raise ClusterUnavailable(f"cannot create the fake GPU device {device}: {error}") from error
        devices.append(device)
    return devices


def start_cluster(folder: Path, n_gpus: int = VIRTUAL_GPUS, timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with all their files in `folder`; return once the node is idle.

    Raises ClusterUnavailable (with the daemons' log tails) when SLURM cannot start;
    whatever was started is stopped again before raising.
    """
    reason = unavailable_reason()
    if reason:
        raise ClusterUnavailable(reason)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged refuses a socket in a folder others cannot traverse
    (folder / "state").mkdir(exist_ok=True)
    (folder / "spool").mkdir(exist_ok=True)
    hostname = socket.gethostname().split(".")[0]
    munge_socket = folder / "munge.socket"
    (folder / "slurm.conf").write_text(slurm_conf_text(
        folder=folder, hostname=hostname, controller_port=free_port(), node_port=free_port(),
        munge_socket=munge_socket, n_gpus=n_gpus))
    wrapper_folder = folder / "bin"
    wrapper_folder.mkdir(exist_ok=True)
    srun_wrapper = wrapper_folder / "srun"
    srun_wrapper.write_text(srun_wrapper_text(folder / "slurm.conf", shutil.which("srun")))
    srun_wrapper.chmod(0o755)
    environment = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
                   "PATH": f"{wrapper_folder}{os.pathsep}{os.environ.get('PATH', '')}"}
    cluster = SlurmCluster(folder=folder, environment=environment)
    try:
        (folder / "gres.conf").write_text(gres_conf_text(hostname, _make_gpu_devices(folder, n_gpus)))
        subprocess.run(["mungekey", "--create", f"--keyfile={folder / 'munge.key'}"], check=True,
                       capture_output=True, timeout=30)
        _start_daemon(cluster, "munged", [
            "munged", "--foreground", f"--socket={munge_socket}", f"--key-file={folder / 'munge.key'}",
            f"--log-file={folder / 'munged.log'}", f"--pid-file={folder / 'munged.pid'}",
            f"--seed-file={folder / 'munged.seed'}"])
        _wait_until(munge_socket.exists, "the munge socket", cluster, timeout)
        _start_daemon(cluster, "slurmctld", ["slurmctld", "-D", "-i"])
        _start_daemon(cluster, "slurmd", ["slurmd", "-D", "-N", hostname])

        def node_idle() -> bool:
            answer = cluster.run("sinfo", "--noheader", "--format=%T", check=False)
            return answer.returncode == 0 and answer.stdout.strip() == "idle"

        _wait_until(node_idle, "the node to be idle in sinfo", cluster, timeout)
    except BaseException as error:
        cluster.stop()
        if isinstance(error, subprocess.SubprocessError):
            raise ClusterUnavailable(f"SLURM did not start: {error}") from error
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(n_gpus: int = VIRTUAL_GPUS) -> Iterator[SlurmCluster]:
    """A private cluster in a new temporary folder; stopped and its folder removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="sae-slurm-"))
    try:
        cluster = start_cluster(folder, n_gpus=n_gpus)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
