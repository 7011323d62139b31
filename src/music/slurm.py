"""What the Slurm launcher (hydra_plugins.music_slurm) reads of the cluster: the queue's state of a sweep's jobs, what
the nodes offer (`sinfo`), and which `hydra.launcher.*` setting asks for more than that — so that a submission sbatch
refuses, or a job Slurm accepts but can never start, ends as one line naming the setting instead of a wait forever.

The parsing is pure (`parse_*`, `impossible_request`, `never_starts`); `slurm_command` is the one place that runs
Slurm's commands.
"""

import getpass
import re
import subprocess
from dataclasses import dataclass

from music.errors import ConfigError, MusicError

# pending reasons after which Slurm never starts the job by itself (its request exceeds what the partition allows)
NEVER = {
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
}
PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*PerJob\w*$")  # a QOS or association's per-job limit: never, too
# reasons that usually mean "wait", and mean "never" only when no node of the partition could hold the job
MAYBE = {"Resources", "ReqNodeNotAvail", "Priority"}
REQUEST = ("partition", "nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "gpus_per_node", "timeout_min")


def slurm_command(*args: str) -> subprocess.CompletedProcess | None:
    """Run one of Slurm's commands; None when it cannot run at all (not on PATH, or hung)."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


@dataclass(frozen=True)
class Offer:
    """What a partition offers a job: its largest node's CPUs, memory and GPUs, its node count and time limit."""

    partition: str
    cpus: int
    memory_mb: int
    gpus: int
    nodes: int
    time_limit_min: float | None  # None: unlimited


def parse_minutes(text: str) -> float | None:
    """Slurm's time ("infinite", "30", "30:00", "2:00:00", "1-00:00:00", "1-12") in minutes; None when unlimited."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        parts += [0.0] * (3 - len(parts))
        return float(days) * 1440 + parts[0] * 60 + parts[1] + parts[2] / 60
    # minutes | minutes:seconds | hours:minutes:seconds
    return {
        1: lambda: parts[0],
        2: lambda: parts[0] + parts[1] / 60,
        3: lambda: parts[0] * 60 + parts[1] + parts[2] / 60,
    }[len(parts)]()


def parse_gpus(gres: str) -> int:
    """GPUs in a node's generic resources (`gpu:2`, `gpu:a100:4(S:0-1)`, `(null)`)."""
    total = 0
    for item in gres.split(","):
        fields = re.sub(r"\(.*?\)", "", item).split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def parse_offer(nodes: str, partitions: str, partition: str | None) -> Offer | None:
    """The Offer of `partition` (None: the default one, starred by sinfo) from `sinfo -h -N -o "%N|%c|%m|%G|%P"` (one
    line per node and partition) and `sinfo -h -o "%P|%l"`; None when sinfo lists no such partition."""
    limits = {}
    for line in partitions.splitlines():
        name, _, limit = line.strip().partition("|")
        if name:
            limits[name] = limit
    name = partition or next((p for p in limits if p.endswith("*")), "")
    name = name.rstrip("*")
    rows = [line.split("|") for line in nodes.splitlines() if line.strip()]
    mine = {row[0]: row for row in rows if len(row) == 5 and row[4].rstrip("*") == name}
    if not mine:
        return None
    limit = next((value for key, value in limits.items() if key.rstrip("*") == name), "infinite")
    return Offer(
        name,
        max(int(r[1].rstrip("+")) for r in mine.values()),
        max(int(r[2].rstrip("+")) for r in mine.values()),
        max(parse_gpus(r[3]) for r in mine.values()),
        len(mine),
        parse_minutes(limit),
    )


def read_offer(partition: str | None) -> Offer | None:
    nodes = slurm_command("sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P")
    partitions = slurm_command("sinfo", "-h", "-o", "%P|%l")
    if nodes is None or partitions is None or nodes.returncode or partitions.returncode:
        return None
    return parse_offer(nodes.stdout, partitions.stdout, partition)


def impossible_request(params: dict, offer: Offer) -> ConfigError | None:
    """The first `hydra.launcher.*` setting asking for more than the partition offers, as the one-line error."""
    where = f"partition {offer.partition}"
    per_node = params.get("tasks_per_node") or 1
    cpus, mem_gb, gpus = params.get("cpus_per_task") or 1, params.get("mem_gb"), params.get("gpus_per_node") or 0
    nodes, minutes = params.get("nodes") or 1, params.get("timeout_min")
    if cpus * per_node > offer.cpus:
        return ConfigError(
            "hydra.launcher.cpus_per_task",
            cpus,
            f"at most {offer.cpus // per_node}: the largest node of {where} has {offer.cpus} CPUs (sinfo)",
        )
    if mem_gb is not None and mem_gb * 1024 > offer.memory_mb:
        return ConfigError(
            "hydra.launcher.mem_gb",
            mem_gb,
            f"at most {offer.memory_mb // 1024}: the largest node of {where} has "
            f"{offer.memory_mb} MB of memory (sinfo)",
        )
    if gpus > offer.gpus:
        return ConfigError(
            "hydra.launcher.gpus_per_node",
            gpus,
            f"at most {offer.gpus}: the largest node of {where} has {offer.gpus} GPUs (sinfo; 0 on CPU-only nodes)",
        )
    if nodes > offer.nodes:
        return ConfigError(
            "hydra.launcher.nodes", nodes, f"at most {offer.nodes}: {where} has {offer.nodes} node(s) (sinfo)"
        )
    if minutes is not None and offer.time_limit_min is not None and minutes > offer.time_limit_min:
        return ConfigError(
            "hydra.launcher.timeout_min", minutes, f"at most {offer.time_limit_min:g}: {where}'s time limit (sinfo)"
        )
    return None


def asked(params: dict) -> str:
    return ", ".join(
        f"hydra.launcher.{key}={'null' if params.get(key) is None else params.get(key)}" for key in REQUEST
    )


def never_starts(reason: str, params: dict, offer: Offer | None) -> MusicError | None:
    """Why a job pending for `reason` will never start (the setting at fault where the nodes' offer shows it), or
    None when it may still start."""
    code = reason.split(",")[0].strip()
    problem = impossible_request(params, offer) if offer else None
    if code in NEVER or PER_JOB_LIMIT.match(code):
        return problem or MusicError(
            f"Slurm will never start the jobs: they pend with reason {reason} (each asks for {asked(params)})"
        )
    return problem if code in MAYBE else None


def parse_queue(text: str, array_id: str) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of the jobs of array `array_id` in `squeue -h -r -o "%i|%T|%r"` output."""
    jobs = {}
    for line in text.splitlines():
        job, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job.split("_")[0] == array_id:
            jobs[job] = (state, reason)
    return jobs


def read_queue(array_id: str) -> dict[str, tuple[str, str]] | None:
    """The array's jobs still in the queue; None when squeue could not say (try again later)."""
    result = slurm_command("squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r")
    if result is None or result.returncode:
        return None
    return parse_queue(result.stdout, array_id)


def sbatch_refusal(said: str | None, params: dict) -> MusicError:
    """The one-line error for a submission sbatch refused (`said`: what it printed; None: no sbatch on PATH), naming
    the `hydra.launcher.*` setting at fault when sbatch's words, or the nodes' offer, point at one."""
    if said is None:
        return MusicError(
            "hydra/launcher=slurm needs Slurm's sbatch on PATH: launch the sweep where sbatch runs "
            "(the cluster's login node)"
        )
    lines = [
        re.sub(r"^sbatch: ((error|fatal): )?(Batch job submission failed: )?", "", line.strip())
        for line in said.splitlines()
        if line.strip()
    ]
    said = "; ".join(dict.fromkeys(lines))
    gpus, partition = params.get("gpus_per_node"), params.get("partition")
    if "partition" in said.lower():
        return ConfigError(
            "hydra.launcher.partition",
            partition,
            f"sbatch refused the jobs: {said} (`sinfo` lists the partitions; null: the default one)",
        )
    if "gres" in said.lower() or "gpu" in said.lower():
        return ConfigError(
            "hydra.launcher.gpus_per_node",
            gpus,
            f"sbatch refused the jobs: {said} (set it to 0 for nodes without GPUs)",
        )
    offer = read_offer(partition)
    problem = impossible_request(params, offer) if offer else None
    if problem:
        return ConfigError(problem.setting, problem.value, f"sbatch refused the jobs: {said}; {problem.allowed}")
    return MusicError(f"sbatch refused the jobs: {said} (each asks for {asked(params)})")
