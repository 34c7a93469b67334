"""plugins/worker_pool.py: one pool per process, grown only, and none inherited by a fork."""

from __future__ import annotations

import multiprocessing as mp
import threading

from tsrx_builtin.worker_pool import GrowingPool


def test_a_smaller_ask_reuses_the_pool_and_a_larger_one_replaces_it():
    pool = GrowingPool("tsrx-test")
    assert pool.current is None
    three = pool.at_least(3)
    assert pool.at_least(1) is three and pool.at_least(3) is three and pool.size == 3
    five = pool.at_least(5)
    assert five is not three and pool.current is five and pool.size == 5
    # five calls at once: each waits for the others, so they run on five threads
    barrier = threading.Barrier(5, timeout=30)
    names = list(five.map(lambda _: (barrier.wait(), threading.current_thread().name)[1], range(5)))
    assert len(set(names)) == 5 and all(n.startswith("tsrx-test") for n in names)
    five.shutdown()


def test_the_start_function_makes_the_pool():
    made = []

    def start(size):
        from concurrent.futures import ThreadPoolExecutor

        made.append(size)
        return ThreadPoolExecutor(size, "tsrx-test-start")

    pool = GrowingPool("tsrx-test-start", start)
    pool.at_least(2)
    pool.at_least(2)
    pool.at_least(4)
    assert made == [2, 4]
    pool.current.shutdown()


_FORKED = GrowingPool("tsrx-test-fork")


def _child_view(_):
    # a forked child sees no pool: the parent's threads do not exist here
    before = _FORKED.current
    result = _FORKED.at_least(2).submit(lambda: 7).result()
    return before is None, result


def test_a_forked_child_starts_its_own_pool():
    parent = _FORKED.at_least(2)
    with mp.get_context("fork").Pool(1) as children:
        assert children.map(_child_view, [0]) == [(True, 7)]
    assert _FORKED.current is parent
    parent.shutdown()
