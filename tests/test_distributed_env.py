"""Reading the distributed environment: torchrun, Slurm/submitit, nothing, and half-set ones."""

from __future__ import annotations

import pytest

from tsrx.engine import distributed
from tsrx.engine.distributed import (
    DistEnv,
    check_master_address,
    detect,
    expand_hostlist,
    first_host,
    node_name,
    port_for_job,
)
from tsrx.errors import TsrxError
from tsrx.launch import job as job_mod

TORCHRUN = {
    "RANK": "1",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "node7",
    "MASTER_PORT": "29500",
}
SLURM = {
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_JOB_NODELIST": "gpu[012-013]",
    "SLURM_JOB_ID": "4242",
    "SLURM_TASKS_PER_NODE": "4(x2)",
}


def test_no_environment_is_one_process():
    env = detect({})
    assert env == DistEnv() and not env.distributed and env.is_main


def test_torchrun_environment():
    env = detect(TORCHRUN)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (1, 4, 1, 2)
    assert (env.master_addr, env.master_port, env.source) == ("node7", 29500, "torchrun")


def test_torchrun_variables_win_over_slurm_ones():
    env = detect({**SLURM, **TORCHRUN})  # submitit exports torchrun variables inside Slurm
    assert env.source == "torchrun" and env.rank == 1


def test_half_set_torchrun_environment_is_refused():
    with pytest.raises(TsrxError, match=r"half-set torchrun environment.*MASTER_ADDR, MASTER_PORT"):
        detect({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_leftover_master_address_alone_is_one_process():
    assert detect({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234"}) == DistEnv()


def test_slurm_environment(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is parsed
    env = detect(SLURM)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 8, 1, 4)
    assert env.master_addr == "gpu012" and env.source == "slurm"
    assert env.master_port == port_for_job("4242")


def test_slurm_master_port_from_job_id():
    # array tasks have their own SLURM_JOB_ID: consecutive ids must get distinct ports
    ports = {port_for_job(str(i)) for i in range(4240, 4340)}
    assert len(ports) == 100 and all(20000 <= p <= 32767 for p in ports)
    assert port_for_job("123_4") == port_for_job("1234")
    assert detect({**SLURM, "SLURM_ARRAY_TASK_ID": "7"}).master_port == port_for_job("4242")
    assert detect({**SLURM, "MASTER_PORT": "23456"}).master_port == 23456


def test_half_set_slurm_environment_is_refused():
    partial = {k: v for k, v in SLURM.items() if k != "SLURM_JOB_NODELIST"}
    with pytest.raises(TsrxError, match="half-set Slurm environment.*SLURM_JOB_NODELIST"):
        detect(partial)


def test_rank_outside_world_is_refused():
    with pytest.raises(TsrxError, match="rank 4 is outside world size 4"):
        detect({**TORCHRUN, "RANK": "4"})


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("node1", ["node1"]),
        ("node1,node2", ["node1", "node2"]),
        ("localhost", ["localhost"]),
        ("n[1-3,5],gpu01", ["n1", "n2", "n3", "n5", "gpu01"]),
        ("gpu[003-005,9]", ["gpu003", "gpu004", "gpu005", "gpu9"]),
        ("gpu[7,9],cpu1", ["gpu7", "gpu9", "cpu1"]),
        ("n[08-11]", ["n08", "n09", "n10", "n11"]),
        ("tsrx-n[1-2]", ["tsrx-n1", "tsrx-n2"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("n[01-2]", ["n01", "n02"]),
        ("n[1-02]", ["n1", "n2"]),
        ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
        ("a[1],b", ["a1", "b"]),
    ],
)
def test_host_list_expands_like_slurm(nodelist, hosts):
    # the same cases against `scontrol show hostnames`: tests/test_slurm_multinode.py
    assert expand_hostlist(nodelist) == hosts


@pytest.mark.parametrize(
    "nodelist", ["", "n[1-2", "n1-2]", "n[2-1]", "n[a-b]", "n[1-2],,m", "n[[1]]"]
)
def test_bad_host_list_is_named(nodelist):
    with pytest.raises(TsrxError, match="SLURM_JOB_NODELIST="):
        expand_hostlist(nodelist)


def test_first_host_without_scontrol_is_parsed(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert first_host("gpu[012-013],cpu1") == "gpu012"


def test_master_address_that_does_not_resolve_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "nosuchnode-tsrx[1-2]")
    monkeypatch.setenv("SLURMD_NODENAME", "nosuchnode-tsrx2")
    env = DistEnv(
        rank=2,
        world_size=4,
        local_rank=0,
        local_world_size=2,
        master_addr="nosuchnode-tsrx1.invalid",
        master_port=23456,
        source="slurm",
    )
    with pytest.raises(
        TsrxError,
        match=r"rank 2 on node nosuchnode-tsrx2: the master address "
        r"'nosuchnode-tsrx1.invalid' .*nosuchnode-tsrx\[1-2\].*does not "
        r"resolve.*/etc/hosts",
    ):
        check_master_address(env)
    check_master_address(DistEnv(rank=0, world_size=2, master_addr="127.0.0.1", master_port=1))
    check_master_address(DistEnv())  # one process: nothing to reach


def test_node_name_prefers_slurms_name(monkeypatch):
    assert node_name({"SLURMD_NODENAME": "tsrx-n2"}) == "tsrx-n2"
    assert node_name({}) == distributed.socket.gethostname()


class _FakeJobEnv:
    cluster, raw_job_id, global_rank, num_tasks, local_rank, num_nodes = "slurm", "77", 3, 4, 1, 2
    hostnames = ["wrong"]


def test_job_exports_the_same_master_port_and_address_as_the_slurm_reader(monkeypatch):
    for key in (
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
    ):
        monkeypatch.setenv(key, "")  # recorded, so the values the job exports are undone
        monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[012-013]")
    values = job_mod.export_distributed_env(_FakeJobEnv())
    from_slurm = detect({k: v for k, v in SLURM.items()})
    assert values["MASTER_PORT"] == str(from_slurm.master_port) == str(port_for_job("4242"))
    assert values["MASTER_ADDR"] == from_slurm.master_addr == "gpu012"
    assert (values["RANK"], values["WORLD_SIZE"], values["LOCAL_WORLD_SIZE"]) == ("3", "4", "2")
