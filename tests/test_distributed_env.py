"""Reading the distributed environment: torchrun, Slurm/submitit, nothing, and half-set ones."""

from __future__ import annotations

import pytest

from tsrx.engine.distributed import DistEnv, detect, parse_first_host, port_for_job
from tsrx.errors import TsrxError

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "node7", "MASTER_PORT": "29500"}
SLURM = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
         "SLURM_JOB_NODELIST": "gpu[012-013]", "SLURM_JOB_ID": "4242", "SLURM_TASKS_PER_NODE": "4(x2)"}


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
    ports = {port_for_job(str(i)) for i in range(4240, 4250)}
    assert len(ports) == 10 and all(20000 <= p <= 32767 for p in ports)
    assert detect({**SLURM, "SLURM_ARRAY_TASK_ID": "7"}).master_port == port_for_job("4242")
    assert detect({**SLURM, "MASTER_PORT": "23456"}).master_port == 23456


def test_half_set_slurm_environment_is_refused():
    partial = {k: v for k, v in SLURM.items() if k != "SLURM_JOB_NODELIST"}
    with pytest.raises(TsrxError, match="half-set Slurm environment.*SLURM_JOB_NODELIST"):
        detect(partial)


def test_rank_outside_world_is_refused():
    with pytest.raises(TsrxError, match="rank 4 is outside world size 4"):
        detect({**TORCHRUN, "RANK": "4"})


@pytest.mark.parametrize("nodelist, first", [
    ("node1", "node1"), ("node1,node2", "node1"), ("gpu[003-005,9]", "gpu003"),
    ("gpu[7,9],cpu1", "gpu7"), ("localhost", "localhost")])
def test_first_host_of_a_node_list(nodelist, first):
    assert parse_first_host(nodelist) == first
