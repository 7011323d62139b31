"""`hydra/launcher=slurm` on a real single-node Slurm cluster that these tests start and stop: munged, slurmctld and
slurmd from Debian's slurm-wlm and munge, with their config, key, state and logs in a temporary folder."""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAST, ROOT

PACKAGES = "slurm-wlm munge"
PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scancel")
PARTITION = "music"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready, logs: list[Path], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                              for p in logs if p.exists())
            pytest.fail(f"the test Slurm cluster: {what} not ready after {timeout_s:.0f} s\n{tails}")
        time.sleep(0.2)


class Cluster:
    """The running cluster: `env` points Slurm's commands (and the jobs they start) at its slurm.conf."""

    def __init__(self, root: Path, programs: dict[str, str]):
        self.root, self.programs, self.daemons = root, programs, []
        self.conf = root / "slurm.conf"
        self.env = os.environ | {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str) -> subprocess.CompletedProcess:
        program = self.programs[args[0]]
        return subprocess.run([program, *args[1:]], capture_output=True, text=True, env=self.env, timeout=30)

    def start(self, name: str, *args: str) -> None:
        with open(self.root / f"{name}.out", "w") as out:
            self.daemons.append(subprocess.Popen([self.programs[name], *args], stdout=out, stderr=subprocess.STDOUT,
                                                 env=self.env))

    def queue(self) -> list[str]:
        return self.command("squeue", "-h", "-o", "%i").stdout.split()

    def stop(self) -> None:
        if len(self.daemons) == 3:  # the controller runs: cancel what is left (a test that failed mid-sweep)
            self.command("scancel", f"--partition={PARTITION}")
            deadline = time.monotonic() + 15
            while self.queue() and time.monotonic() < deadline:
                time.sleep(0.2)
        for daemon in reversed(self.daemons):  # slurmd, slurmctld, munged
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def write_config(root: Path, node_line: str) -> None:
    """slurm.conf for one node, this machine: no cgroups (proctrack/linuxproc, task/none), no accounting database."""
    state, spool = root / "state", root / "spool"
    state.mkdir()
    spool.mkdir()
    user = pwd.getpwuid(os.getuid()).pw_name
    host = node_line.split()[0].removeprefix("NodeName=")
    (root / "slurm.conf").write_text(f"""\
ClusterName=music-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={root / 'munge.socket'}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster on this machine for the module's tests. Installs nothing: without Debian's slurm-wlm
    and munge the tests fail, naming them."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    programs = {name: shutil.which(name, path=search) for name in PROGRAMS}
    missing = [name for name, path in programs.items() if path is None]
    if missing:
        pytest.fail(f"the Slurm tests need {', '.join(missing)}: apt-get install -y {PACKAGES}")
    root = tmp_path_factory.mktemp("slurm")
    if len(str(root / "munge.socket")) > 100:  # a Unix socket's path is at most 107 bytes
        pytest.fail(f"the Slurm tests need a shorter temporary folder than {root} (pytest --basetemp=/tmp/...)")
    key = root / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    node = subprocess.run([programs["slurmd"], "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    write_config(root, node)
    cluster = Cluster(root, programs)
    try:
        # -f: run although pytest's temporary folders are not world-traversable, as munged wants its socket's folder
        cluster.start("munged", "-F", "-f", f"--key-file={key}", f"--socket={root / 'munge.socket'}",
                      f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                      f"--seed-file={root / 'munged.seed'}")
        wait_for("munged", lambda: cluster.command("munge", "-n", "-S", str(root / "munge.socket")).returncode == 0,
                 [root / "munged.out", root / "munged.log"])
        cluster.start("slurmctld", "-D", "-f", str(cluster.conf))
        cluster.start("slurmd", "-D", "-f", str(cluster.conf))
        wait_for("the node", lambda: cluster.command("sinfo", "-h", "-N", "-o", "%T").stdout.strip() == "idle",
                 [root / f"{name}.{ext}" for name in ("slurmctld", "slurmd") for ext in ("out", "log")])
        yield cluster
    finally:
        cluster.stop()


def sweep_command(tmp_path: Path, mnist_dir: Path, *overrides: str) -> list[str]:
    """`experiment=pretrain,merged` (one seed: both need the same θ0) on the test data, each job asking for 1 CPU."""
    return [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm", "experiment=pretrain,merged",
            f"data.data_dir={mnist_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"cache.dir={tmp_path / 'cache'}", "logger=none", *FAST,
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", *overrides]


def test_multirun_through_slurm_shares_the_cache(slurm_cluster, tmp_path, mnist_dir):
    command = sweep_command(tmp_path, mnist_dir, "hydra.launcher.gpus_per_node=0")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=slurm_cluster.env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    runs = {json.loads(p.read_text())["experiment"]: json.loads(p.read_text()) for p in sweep.rglob("metrics.json")}
    assert sorted(runs) == ["merged", "pretrain"]
    assert [runs[name]["seed"] for name in sorted(runs)] == [0, 0]
    assert all(0.0 <= run["test/acc"] <= 1.0 for run in runs.values())
    # both jobs ran as tasks of one Slurm job array, on this cluster's node
    submitted = sorted(p.name for p in (sweep / ".submitit").iterdir() if "_" in p.name and p.is_dir())
    array_id = submitted[0].split("_")[0]
    assert submitted == [f"{array_id}_0", f"{array_id}_1"]
    job_logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.out"))
    assert job_logs.count(f"job_id={array_id}_") == 2
    # the jobs share the cache: θ0 was built once, by one job, and read by the other
    assert len(list((tmp_path / "cache").glob("theta0-*.safetensors"))) == 1
    logs = "".join(p.read_text() for p in sweep.rglob("train.log"))
    assert (logs.count("cache miss: θ0"), logs.count("cache hit: θ0")) == (1, 1)


@pytest.mark.parametrize("overrides, setting, said", [
    ((), "hydra.launcher.gpus_per_node=1", "Invalid generic resource"),  # the default GPU request; this node has none
    (("hydra.launcher.gpus_per_node=0", "hydra.launcher.partition=nosuch"), "hydra.launcher.partition='nosuch'",
     "Invalid partition"),
], ids=["gpu-on-a-cpu-node", "unknown-partition"])
def test_refused_submission_is_one_line(slurm_cluster, tmp_path, mnist_dir, overrides, setting, said):
    result = subprocess.run(sweep_command(tmp_path, mnist_dir, *overrides), capture_output=True, text=True,
                            timeout=120, env=slurm_cluster.env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert lines[0].startswith(f"error: {setting} is not allowed: sbatch refused the jobs: ") and said in lines[0]
    assert [p for p in (tmp_path / "sweep").glob(".submitit/*") if p.is_dir()] == []  # no job reached Slurm


def test_setting_a_slurm_job_refuses_is_one_line(slurm_cluster, tmp_path, mnist_dir):
    command = sweep_command(tmp_path, mnist_dir, "hydra.launcher.gpus_per_node=0", "experiment=pretrain", "seed=-1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=slurm_cluster.env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "sacct" not in line and "accounting" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: seed=-1 is not allowed: "), result.stderr[-3000:]
