"""The sharding seam: order, identity across nj and a Dask cluster, named failures, lost workers."""
import os
import signal

import numpy as np
import pytest

from asr_kd.errors import AsrKdError
from asr_kd.parallel import Jobs, held_pool, run_shards, split


def shard_sum(shard, scale):
    """A stand-in for a stage's accumulation: float64 sums whose order matters bit-wise."""
    rng = np.random.default_rng(int(shard[0]))
    return float(np.sum(rng.standard_normal(1000) * scale)), list(shard)


def fail_on(shard, bad):
    if bad in shard:
        raise ValueError(f"cannot read {bad}")
    return len(shard)


def named_failure(shard):
    if shard == ["a"]:
        raise AsrKdError(f"utterance {shard[0]!r}: broken")
    return shard


def die(shard):
    if 3 in shard:
        os.kill(os.getpid(), signal.SIGKILL)
    return shard


def worker_pid(shard):
    return os.getpid()


def test_split_is_contiguous_balanced_and_complete():
    items = list(range(10))
    shards = split(items, 4)
    assert [len(s) for s in shards] == [2, 3, 2, 3]
    assert sum(shards, []) == items
    assert split(items[:2], 4) == [[0], [1]]
    assert split([], 3) == []


def test_results_in_shard_order_and_equal_across_nj():
    shards = split(list(range(40)), 8)
    one = run_shards(shard_sum, shards, Jobs(nj=1), 2.0)
    four = run_shards(shard_sum, shards, Jobs(nj=4), 2.0)
    assert one == four
    assert [r[1] for r in four] == shards


def test_failing_shard_is_named():
    shards = split([f"utt{i:02d}" for i in range(12)], 4)
    for nj in (1, 2):
        with pytest.raises(AsrKdError, match=r"shard \d \(3 items: utt06 \.\. utt08\) failed: ValueError: cannot read utt07"):
            run_shards(fail_on, shards, Jobs(nj=nj), "utt07")


def test_asr_kd_error_passes_through():
    with pytest.raises(AsrKdError, match="utterance 'a': broken"):
        run_shards(named_failure, [["a"], ["b"]], Jobs(nj=2))


def test_lost_worker_is_an_error_not_a_smaller_result():
    with pytest.raises(AsrKdError, match="worker process was lost"):
        run_shards(die, split(list(range(8)), 4), Jobs(nj=2))


def test_held_pool_serves_every_call_in_the_block():
    jobs, shards = Jobs(nj=2), split(list(range(8)), 4)
    with held_pool(jobs):
        pids = set(run_shards(worker_pid, shards, jobs)) | set(run_shards(worker_pid, shards, jobs))
        assert len(pids) <= 2 and os.getpid() not in pids   # the same two workers for both calls
        assert run_shards(shard_sum, shards, jobs, 2.0) == run_shards(shard_sum, shards, Jobs(nj=1), 2.0)
    fresh = set(run_shards(worker_pid, shards, jobs))    # outside the block: a new pool per call
    assert not fresh & pids


def test_held_pool_still_fails_a_lost_worker():
    jobs = Jobs(nj=2)
    with pytest.raises(AsrKdError, match="worker process was lost"), held_pool(jobs):
        run_shards(die, split(list(range(8)), 4), jobs)


def test_dask_local_cluster_gives_the_same_results():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        shards = split(list(range(40)), 8)
        on_dask = run_shards(shard_sum, shards, Jobs(nj=8, dask_scheduler=cluster.scheduler_address), 2.0)
    assert on_dask == run_shards(shard_sum, shards, Jobs(nj=1), 2.0)


def test_bad_nj_and_unreachable_scheduler():
    with pytest.raises(AsrKdError, match="--nj must be >= 1"):
        Jobs(nj=0)
    with pytest.raises(AsrKdError, match="cannot reach the scheduler"):
        run_shards(len, [[1], [2]], Jobs(dask_scheduler="tcp://127.0.0.1:9"))
