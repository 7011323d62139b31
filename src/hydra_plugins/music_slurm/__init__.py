"""`hydra/launcher=slurm`: hydra-submitit's Slurm launcher, except that a submission sbatch refuses (a GPU asked of a
node without one, an unknown partition) and a setting a job refuses end as one line naming the setting and exit
status 2, as they do without Slurm, not as a traceback; and that while it waits it reads the queue, so a job Slurm
will never start (it asks for more than any node has) or one that left the queue without a result (cancelled,
killed) ends the sweep with one line instead of a wait forever.

It lives under `hydra_plugins` because Hydra instantiates launchers from that package only.
"""

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from music import slurm
from music.errors import TRACEBACK_ENV, MusicError

log = logging.getLogger(__name__)
UNREAD = object()  # the partition's offer, before sinfo was asked


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    POLL_S = 5.0  # how often the queue is read while the jobs run
    GRACE_S = 10.0  # how long a job may be out of the queue without its result file before it counts as lost

    def __call__(self, *args, **kwargs) -> JobReturn:
        """One job, in Slurm. A setting the job refuses (`seed=-1`) is raised, not printed with exit status 2: Hydra
        hands the error back to the launching process, which prints its one line; a job that exited would leave
        submitit no result to read (on a cluster without accounting it would wait for one forever)."""
        os.environ[TRACEBACK_ENV] = "1"  # music.run raises its MusicError instead of printing it and exiting
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """hydra-submitit's `launch` (1.2), with the submission and the wait apart: submitit prints sbatch's
        complaint before raising it, so the submission's stderr is held back and the complaint becomes one line."""
        import submitit
        from submitit.core.utils import FailedJobError

        assert self.config is not None and len(job_overrides) > 0
        if shutil.which("sbatch") is None:
            raise slurm.sbatch_refusal(None, self.params)
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k not in init_keys}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        job_params, names = [], [" ".join(filter_overrides(overrides)) for overrides in job_overrides]
        for idx, (overrides, name) in enumerate(zip(job_overrides, names), start=initial_job_idx):
            log.info(f"\t#{idx} : {name}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        held = io.StringIO()  # what submitit prints while submitting: sbatch's complaint, echoed before it is raised
        try:
            with contextlib.redirect_stderr(held):
                jobs = executor.map_array(self, *zip(*job_params))
        except FailedJobError as error:
            if isinstance(error.__cause__, subprocess.CalledProcessError) and error.__cause__.cmd[0] == "sbatch":
                raise slurm.sbatch_refusal(error.__cause__.stderr, self.params) from None
            sys.stderr.write(held.getvalue())
            raise
        sys.stderr.write(held.getvalue())
        self.wait(jobs, names)
        returns = [job.results()[0] for job in jobs]
        for job_return in returns:  # raised here, the sweeper does not print the job's overrides on a line first
            if job_return.status == JobStatus.FAILED and isinstance(job_return._return_value, MusicError):
                raise job_return._return_value
        return returns

    def wait(self, jobs: list, names: list[str]) -> None:
        """Until every job has its result file, read the queue every POLL_S seconds: a job pending for a reason that
        means "never", or out of the queue without a result for GRACE_S, cancels the sweep's jobs and raises the
        one-line error (the setting at fault, what the nodes offer; or the job and its log)."""
        array_id = str(jobs[0].job_id).split("_")[0]
        offer, last, gone = UNREAD, {}, {}
        while waiting := [(job, name) for job, name in zip(jobs, names) if not has_result(job)]:
            queue = slurm.read_queue(array_id)
            for job, name in waiting if queue is not None else ():
                state, reason = queue.get(job.job_id, (None, ""))
                if state is None:
                    since = gone.setdefault(job.job_id, time.monotonic())
                    if time.monotonic() - since > self.GRACE_S and not has_result(job):
                        self.cancel(array_id)
                        raise MusicError(
                            f"Slurm job {job.job_id} ({name}) left the queue without a result (last seen "
                            f"{last.get(job.job_id, 'pending').lower()}: cancelled or killed); the sweep's other "
                            f"jobs are cancelled; its log: {job.paths.stderr}"
                        )
                    continue
                last[job.job_id] = state
                gone.pop(job.job_id, None)  # back in the queue (requeued): its absence starts over
                if state == "PENDING" and reason not in ("", "None"):
                    if offer is UNREAD:  # sinfo once: a partition it does not list stays None, not re-read each poll
                        offer = slurm.read_offer(self.params.get("partition"))
                    problem = slurm.never_starts(reason, self.params, offer)
                    if problem:
                        self.cancel(array_id)
                        raise problem
            time.sleep(self.POLL_S)

    @staticmethod
    def cancel(array_id: str) -> None:
        slurm.slurm_command("scancel", array_id)


def has_result(job) -> bool:
    """Whether the job wrote its result file (touching its folder first: a network file system caches listings)."""
    folder = job.paths.folder
    with contextlib.suppress(OSError):
        folder.chmod(folder.stat().st_mode)
    return job.paths.result_pickle.exists()
