"""Parallel jobs through one seam: shards of utterances mapped over a `concurrent.futures.Executor`.

Every CPU stage that splits a corpus (feature extraction, GMM accumulation, alignment, decoding,
teacher caching) calls `run_shards(fn, shards, jobs)`. Where the work runs is chosen by `Jobs`:

- `nj = 1`: in this process, no pool (debuggable, nothing pickled);
- `nj > 1`: a local `ProcessPoolExecutor` of nj processes (Kaldi's `run.pl` with `--nj`);
- `dask_scheduler = "tcp://HOST:PORT"`: the workers of a Dask distributed cluster, through
  `distributed.Client.get_executor()` (Kaldi's `queue.pl`/`slurm.pl`; lhotse's `executor=` does the
  same). Start one with `dask scheduler` on one machine and `dask worker tcp://HOST:8786` on each
  of the others; the package and the data paths must be visible to every worker.

No scheduler of our own: the executor is the library's. What this module adds is what a stage needs
to stay correct: results come back in shard order whatever finished first, so a stage that sums
statistics or concatenates stores gets the same bytes for nj = 1, 4 or a cluster; a shard that
fails is named (its first and last item); a worker lost mid-job (kill -9, out of memory) ends the
stage with an error instead of a silently smaller result.

`fn` and its arguments are pickled for the workers: pass paths and small configs, not models.
A stage whose shard results are summed (GMM statistics) must cut its shards independently of nj
(e.g. a fixed number of utterances per shard): floating-point sums are exact only in a fixed order,
and nj = 1 must give the same bytes as nj = 4.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import concurrent.futures.process  # noqa: F401 (cf.process.BrokenProcessPool, also when no pool was made)
import contextlib
import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

from asr_kd.errors import AsrKdError
from asr_kd.io import disk_full_message

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Jobs:
    """Where sharded work runs: `nj` local processes, or a Dask cluster at `dask_scheduler`."""

    nj: int = 1
    dask_scheduler: str | None = None

    def __post_init__(self):
        if self.nj < 1:
            raise AsrKdError(f"--nj must be >= 1 (got {self.nj})")


def add_job_args(p: argparse.ArgumentParser, default_nj: int = 1) -> None:
    """`--nj N` and `--dask-scheduler ADDR`, the same on every sharded command."""
    p.add_argument("--nj", type=int, default=default_nj,
                   help="parallel jobs: shards of utterances run in N local processes (default %(default)s)")
    p.add_argument("--dask-scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the shards on a Dask distributed cluster instead of local processes "
                        "(needs `pip install asr_kd[dask]`)")


def jobs_from_args(args: argparse.Namespace) -> Jobs:
    return Jobs(nj=args.nj, dask_scheduler=args.dask_scheduler)


def split(items: Sequence[T], num_shards: int) -> list[list[T]]:
    """Contiguous shards of nearly equal size, in order (Kaldi's split_scp.pl); no empty shard."""
    n = max(1, min(num_shards, len(items)))
    bounds = [i * len(items) // n for i in range(n + 1)]
    return [list(items[bounds[i]:bounds[i + 1]]) for i in range(n) if bounds[i + 1] > bounds[i]]


def run_shards(fn: Callable[..., R], shards: Sequence[Sequence], jobs: Jobs = Jobs(), *args,
               desc: str = "jobs") -> list[R]:
    """[fn(shard, *args) for shard in shards], run as `jobs` says; results in shard order.

    An AsrKdError raised by `fn` passes through unchanged (it names its utterance); any other
    failure, a lost worker included, becomes an AsrKdError naming the shard. Shards not yet started
    are cancelled on the first failure.
    """
    if not shards:
        return []
    if jobs.dask_scheduler is None and (jobs.nj <= 1 or len(shards) == 1):
        return [_call(fn, shard, args, i, desc) for i, shard in enumerate(tqdm(shards, desc=desc, unit="shard"))]
    if jobs in _HELD:
        return _map(_HELD[jobs], fn, shards, args, desc)
    with _executor(jobs, len(shards)) as pool:
        return _map(pool, fn, shards, args, desc)


@contextlib.contextmanager
def held_pool(jobs: Jobs) -> Iterator[None]:
    """Keep one executor open for every `run_shards(..., jobs)` inside the block.

    A GMM stage calls run_shards a few times per pass over ~40 passes; starting a process pool (or a
    Dask client) per call cost ~12 s of CPU per AN4 stage. A forked worker holds the parent's memory
    as it was when the pool started, which is harmless here: shards get everything they use as
    pickled arguments.
    """
    if (jobs.dask_scheduler is None and jobs.nj <= 1) or jobs in _HELD:
        yield
        return
    with _executor(jobs, jobs.nj) as pool:
        _HELD[jobs] = pool
        try:
            yield
        finally:
            del _HELD[jobs]


_HELD: dict[Jobs, cf.Executor] = {}


def _map(pool: cf.Executor, fn, shards, args, desc: str) -> list:
    futures = [pool.submit(fn, shard, *args) for shard in shards]
    try:
        for future in tqdm(cf.as_completed(futures), total=len(futures), desc=desc, unit="shard"):
            future.result()  # raise the first failure as soon as it happens
        return [f.result() for f in futures]
    except AsrKdError:
        _cancel(futures)
        raise
    except Exception as e:  # noqa: BLE001 (every other failure is reported with its shard)
        _cancel(futures)
        i = next((k for k, f in enumerate(futures) if f.done() and not f.cancelled() and f.exception()), None)
        raise _shard_error(desc, shards, i, e) from e


def _call(fn, shard, args, i: int, desc: str):
    try:
        return fn(shard, *args)
    except AsrKdError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _shard_error(desc, [shard], 0, e, index=i) from e


def _shard_error(desc: str, shards, i: int | None, e: BaseException, index: int | None = None) -> AsrKdError:
    lost = isinstance(e, cf.process.BrokenProcessPool) or type(e).__name__ == "KilledWorker"
    full = disk_full_message(e) if isinstance(e, OSError) else None
    what = "a worker process was lost (killed, or out of memory)" if lost else full or f"{type(e).__name__}: {e}"
    if i is None:
        return AsrKdError(f"{desc}: {what}; nothing of this stage was kept; re-run the command")
    shard = shards[i]
    span = f"{shard[0]} .. {shard[-1]}" if len(shard) > 1 else f"{shard[0]}"
    return AsrKdError(f"{desc}: shard {index if index is not None else i} ({len(shard)} items: {span}) "
                      f"failed: {what}; re-run the command")


def _cancel(futures) -> None:
    for f in futures:
        f.cancel()


@contextlib.contextmanager
def _executor(jobs: Jobs, num_shards: int) -> Iterator[cf.Executor]:
    if jobs.dask_scheduler is not None:
        client = _dask_client(jobs.dask_scheduler)
        try:
            yield client.get_executor()
        finally:
            client.close()
        return
    methods = multiprocessing.get_all_start_methods()
    # fork: workers start at once with the parent's imports (no torch re-import per worker)
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with cf.ProcessPoolExecutor(max_workers=min(jobs.nj, num_shards), mp_context=ctx,
                                initializer=_one_thread) as pool:
        yield pool


def _one_thread() -> None:
    """nj workers x N BLAS/torch threads would oversubscribe the cores: one thread per worker.

    The BLAS pools are already started in a forked worker, so the environment variable alone does
    nothing there: threadpoolctl resizes them in place. Imported here, not at the top: the nnet and
    distill stages (which shard teacher caching) must import with torch, numpy, pyyaml and tqdm
    alone (the GPU machine's image).
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=1)
    except ImportError:
        pass
    if "torch" in sys.modules:  # only where the stage uses it: importing torch costs ~1 s a worker
        sys.modules["torch"].set_num_threads(1)


def _dask_client(address: str):
    try:
        from distributed import Client
    except ImportError as e:
        raise AsrKdError(f"--dask-scheduler {address}: Dask is not installed; "
                         f"`pip install 'dask[distributed]'` (or `pip install asr_kd[dask]`)") from e
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise AsrKdError(f"--dask-scheduler {address}: cannot reach the scheduler ({e}); "
                         f"is `dask scheduler` running there?") from e
