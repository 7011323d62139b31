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
            tails = "\n".join(
                f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                for p in logs
                if p.exists()
            )
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
            self.daemons.append(
                subprocess.Popen([self.programs[name], *args], stdout=out, stderr=subprocess.STDOUT, env=self.env)
            )

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
AuthInfo=socket={root / "munge.socket"}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
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
        cluster.start(
            "munged",
            "-F",
            "-f",
            f"--key-file={key}",
            f"--socket={root / 'munge.socket'}",
            f"--pid-file={root / 'munged.pid'}",
            f"--log-file={root / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}",
        )
        wait_for(
            "munged",
            lambda: cluster.command("munge", "-n", "-S", str(root / "munge.socket")).returncode == 0,
            [root / "munged.out", root / "munged.log"],
        )
        cluster.start("slurmctld", "-D", "-f", str(cluster.conf))
        cluster.start("slurmd", "-D", "-f", str(cluster.conf))
        wait_for(
            "the node",
            lambda: cluster.command("sinfo", "-h", "-N", "-o", "%T").stdout.strip() == "idle",
            [root / f"{name}.{ext}" for name in ("slurmctld", "slurmd") for ext in ("out", "log")],
        )
        yield cluster
    finally:
        cluster.stop()


def sweep_command(tmp_path: Path, mnist_dir: Path, *overrides: str) -> list[str]:
    """`experiment=pretrain,merged` (one seed: both need the same θ0) on the test data, each job asking for 1 CPU."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hydra/launcher=slurm",
        "experiment=pretrain,merged",
        f"data.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"cache.dir={tmp_path / 'cache'}",
        "logger=none",
        *FAST,
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        *overrides,
    ]


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


@pytest.mark.parametrize(
    "overrides, setting, said",
    [
        (
            (),
            "hydra.launcher.gpus_per_node=1",
            "Invalid generic resource",
        ),  # the default GPU request; this node has none
        (
            ("hydra.launcher.gpus_per_node=0", "hydra.launcher.partition=nosuch"),
            "hydra.launcher.partition='nosuch'",
            "Invalid partition",
        ),
        (
            ("hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=100000"),
            "hydra.launcher.mem_gb=100000",
            "MB of memory (sinfo)",
        ),
    ],
    ids=["gpu-on-a-cpu-node", "unknown-partition", "more-memory-than-any-node"],
)
def test_refused_submission_is_one_line(slurm_cluster, tmp_path, mnist_dir, overrides, setting, said):
    result = subprocess.run(
        sweep_command(tmp_path, mnist_dir, *overrides),
        capture_output=True,
        text=True,
        timeout=120,
        env=slurm_cluster.env,
        cwd=tmp_path,
    )
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


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    return lines[0]


def test_a_job_no_node_can_hold_is_cancelled_with_one_line_naming_the_setting(slurm_cluster, tmp_path, mnist_dir):
    """Slurm accepts a job asking for more CPUs than any node has and leaves it pending (PartitionConfig) forever; the
    launcher reads that reason, cancels the array and names the setting with what the nodes offer."""
    cpus = int(slurm_cluster.command("sinfo", "-h", "-N", "-o", "%c").stdout.split()[0])
    command = sweep_command(
        tmp_path, mnist_dir, "hydra.launcher.gpus_per_node=0", f"hydra.launcher.cpus_per_task={cpus + 2}"
    )
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=slurm_cluster.env, cwd=tmp_path)
    assert time.monotonic() - start < 60
    assert result.returncode == 2, result.stderr[-3000:]
    assert one_line(result) == (
        f"error: hydra.launcher.cpus_per_task={cpus + 2} is not allowed: at most {cpus}: the largest node of "
        f"partition {PARTITION} has {cpus} CPUs (sinfo)"
    )
    assert slurm_cluster.queue() == []  # cancelled, not left pending


def test_a_job_cancelled_mid_sweep_ends_the_sweep_with_one_line(slurm_cluster, tmp_path, mnist_dir):
    """On a cluster without accounting, sacct knows nothing of a cancelled job: the launcher sees it leave the queue
    without a result and stops, naming it, instead of waiting forever."""
    command = sweep_command(
        tmp_path, mnist_dir, "hydra.launcher.gpus_per_node=0", "experiment=pretrain", "hydra.launcher.setup=[sleep 120]"
    )
    sweep = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_cluster.env, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while not (running := slurm_cluster.command("squeue", "-h", "-t", "RUNNING", "-o", "%i").stdout.split()):
            assert time.monotonic() < deadline and sweep.poll() is None, "the job never started"
            time.sleep(0.5)
        slurm_cluster.command("scancel", running[0])
        stdout, stderr = sweep.communicate(timeout=90)
    finally:
        sweep.kill()
    result = subprocess.CompletedProcess(command, sweep.returncode, stdout, stderr)
    assert result.returncode != 0
    line = one_line(result)
    assert (
        line.startswith(f"error: Slurm job {running[0]} (experiment=pretrain")
        and "left the queue without a result (last seen " in line
    )
    assert line.endswith("_log.err") and not list((tmp_path / "sweep").rglob("metrics.json"))


# ---------- what the launcher reads of the cluster (pure)


def test_slurm_times_gres_and_the_partitions_offer():
    from music.slurm import Offer, parse_gpus, parse_minutes, parse_offer

    assert [parse_minutes(t) for t in ("infinite", "30", "30:00", "2:00:00", "1-00:00:00", "1-12", "UNLIMITED")] == [
        None,
        30,
        30,
        120,
        1440,
        2160,
        None,
    ]
    assert [parse_gpus(g) for g in ("(null)", "gpu:2", "gpu:a100:4(S:0-1)", "gpu:1,gpu:tesla:2", "mps:100")] == [
        0,
        2,
        4,
        3,
        0,
    ]
    nodes = "n1|32|128000|gpu:4|gpu*\nn2|64|256000|gpu:8(S:0)|gpu*\nc1|2|4000|(null)|cpu\n"
    partitions = "gpu*|2-00:00:00\ncpu|30:00\n"
    assert parse_offer(nodes, partitions, None) == Offer("gpu", 64, 256000, 8, 2, 2880)
    assert parse_offer(nodes, partitions, "cpu") == Offer("cpu", 2, 4000, 0, 1, 30)
    assert parse_offer(nodes, partitions, "nosuch") is None


@pytest.mark.parametrize(
    ("asked", "setting", "allowed"),
    [
        (
            {"cpus_per_task": 4},
            "hydra.launcher.cpus_per_task=4",
            "at most 2: the largest node of partition cpu has 2 CPUs (sinfo)",
        ),
        (
            {"cpus_per_task": 1, "tasks_per_node": 3},
            "hydra.launcher.cpus_per_task=1",
            "at most 0: the largest node of partition cpu has 2 CPUs (sinfo)",
        ),
        (
            {"mem_gb": 16},
            "hydra.launcher.mem_gb=16",
            "at most 3: the largest node of partition cpu has 4000 MB of memory (sinfo)",
        ),
        (
            {"gpus_per_node": 1},
            "hydra.launcher.gpus_per_node=1",
            "at most 0: the largest node of partition cpu has 0 GPUs (sinfo; 0 on CPU-only nodes)",
        ),
        ({"nodes": 2}, "hydra.launcher.nodes=2", "at most 1: partition cpu has 1 node(s) (sinfo)"),
        ({"timeout_min": 60}, "hydra.launcher.timeout_min=60", "at most 30: partition cpu's time limit (sinfo)"),
    ],
)
def test_the_first_setting_a_partition_cannot_hold_is_named(asked, setting, allowed):
    from music.slurm import Offer, impossible_request, never_starts

    offer = Offer("cpu", 2, 4000, 0, 1, 30)
    params = {
        "cpus_per_task": 1,
        "mem_gb": 1,
        "gpus_per_node": 0,
        "nodes": 1,
        "tasks_per_node": 1,
        "timeout_min": 10,
    } | asked
    assert str(impossible_request(params, offer)) == f"{setting} is not allowed: {allowed}"
    assert str(never_starts("PartitionConfig", params, offer)).startswith(setting)
    assert str(never_starts("Resources", params, offer)).startswith(setting)  # "wait for resources" that can never come


def test_pending_reasons_that_mean_wait_are_left_alone():
    from music.slurm import Offer, never_starts, parse_queue

    offer = Offer("cpu", 2, 4000, 0, 1, 30)
    fits = {"cpus_per_task": 1, "mem_gb": 1, "gpus_per_node": 0, "nodes": 1, "tasks_per_node": 1, "timeout_min": 10}
    assert [
        never_starts(reason, fits, offer)
        for reason in ("Resources", "Priority", "ReqNodeNotAvail, UnavailableNodes:c1", "Dependency")
    ] == [None] * 4
    # a reason that means never with a request the nodes could hold (a QOS's limit, say): still one line, naming the reason
    assert str(never_starts("QOSMaxCpuPerJobLimit", fits, offer)).startswith(
        "Slurm will never start the jobs: they pend with reason QOSMaxCpuPerJobLimit"
    )
    assert parse_queue("12_0|RUNNING|None\n12_1|PENDING|Resources\n13_0|PENDING|Priority\n", "12") == {
        "12_0": ("RUNNING", "None"),
        "12_1": ("PENDING", "Resources"),
    }
