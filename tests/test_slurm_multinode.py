"""Multi-node DDP on the two-node test Slurm (tsrx-n1, tsrx-n2 on one host).

A 2 nodes x 2 ranks job is preempted mid-run, requeued and resumed; it must end exactly
like the same global batch on one node with 4 ranks (``train.deterministic``). The same
runs show the nodes in ``tsrx status`` and in every rank's log, and an audit of file
writes shows that only rank 0 writes the run's checkpoints and status. Each wait is bounded.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest
import torch
from slurm_fixture import (  # noqa: F401
    MULTI_PARTITION,
    SLURM_NODES,
    hold,
    hold_plugin,
    read_json,
    slurm_cluster,
    status_rows,
    tiny_real_experiment,
    train_losses,
    tsrx,
    wait_for,
)

from tsrx.engine.distributed import expand_hostlist

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Loaded by every Python process of the job (PYTHONPATH): each Slurm task records the
# files it creates, writes, renames, links or removes under TSRX_AUDIT_ROOT, one JSON line
# per event, in its own file. The hook writes with os.write on a descriptor opened before
# the hook is installed, so it does not audit itself.
AUDIT_SITECUSTOMIZE = textwrap.dedent("""
    import os, sys
    if os.environ.get("TSRX_AUDIT_ROOT") and os.environ.get("SLURM_PROCID"):
        import json
        _root = os.path.realpath(os.environ["TSRX_AUDIT_ROOT"])
        _rank = os.environ["SLURM_PROCID"]
        _out = os.open(os.path.join(os.environ["TSRX_AUDIT_DIR"], "{}-{}-rank{}.jsonl".format(
            os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_RESTART_COUNT", "0"), _rank)),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def _note(event, path):
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if not isinstance(path, (str, os.PathLike)):
                return
            full = os.path.abspath(os.fspath(path))
            if full == _root or full.startswith(_root + os.sep):
                os.write(_out, (json.dumps({"rank": int(_rank), "node": os.environ.get(
                    "SLURMD_NODENAME"), "event": event, "path": full}) + "\\n").encode())

        def _hook(event, args):
            if event == "open":
                path, mode, flags = args
                if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                        mode is None and isinstance(flags, int) and flags & _writing):
                    _note("open", path)
            elif event in ("os.rename", "os.symlink", "os.link"):
                _note(event, args[1])
            elif event in ("os.remove", "os.rmdir", "os.truncate", "shutil.rmtree"):
                _note(event, args[0])

        sys.addaudithook(_hook)
""")


def test_two_node_job_preempted_and_requeued_ends_like_four_ranks_on_one_node(
    slurm_cluster, workdir, monkeypatch
):
    audit_dir = workdir / "audit"
    audit_dir.mkdir()
    (workdir / "site").mkdir()
    (workdir / "site" / "sitecustomize.py").write_text(AUDIT_SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(workdir / "site"))  # sbatch passes the environment on
    monkeypatch.setenv("TSRX_AUDIT_ROOT", str(workdir / "runs" / "span"))
    monkeypatch.setenv("TSRX_AUDIT_DIR", str(audit_dir))
    # The same global batch (4 ranks x 2 images), once on one node and once on two nodes
    # (ranks 0, 1 on tsrx-n1 and 2, 3 on tsrx-n2).
    held = workdir / "two-held"
    path = tiny_real_experiment(
        workdir / "span.toml",
        workdir / "data" / "synth",
        "span",
        "slurm",
        ranks=4,
        steps=8,
        top=hold_plugin(workdir),
        extra=f'''
        [[variants]]
        name = "one"
        launcher = {{ nodes = 1, tasks_per_node = 4, gpus_per_node = 4 }}
        [[variants]]
        name = "two"
        launcher = {{ nodes = 2, tasks_per_node = 2, gpus_per_node = 2 }}
        slurm = {{ partition = "{MULTI_PARTITION}" }}
        train = {{ selectors = {hold(held)} }}
    ''',
    )
    path.write_text(
        path.read_text().replace("log_every = 1", "log_every = 1\ndeterministic = true")
    )
    dry = tsrx("submit", str(path), "--dry-run", "--only", "two", cwd=workdir)
    assert dry.returncode == 0, dry.stderr
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --gpus-per-node=2",
        f"#SBATCH --partition={MULTI_PARTITION}",
    ):
        assert line in dry.stdout
    res = tsrx("submit", str(path), cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = {
        re.split(r"[-,]", d.name)[0]: d
        for d in (workdir / "runs" / "span").iterdir()
        if d.is_dir() and d.name != "submitit"
    }
    assert set(runs) == {"one", "two"}
    job_two = read_json(runs["two"] / "meta.json")["jobs"][0]["job_id"]

    # "one" fills tsrx-n1, so "two" starts after it; preempt "two" mid-run (it holds at its
    # first validation until then).
    wait_for(held.exists, 300, "two held at its first validation")
    subprocess.run(["scancel", "--signal=USR2", job_two], check=True, timeout=30)
    wait_for(
        lambda: (
            sum(j["event"] == "start" for j in read_json(runs["two"] / "meta.json")["jobs"]) >= 2
        ),
        150,
        "two requeued and started again",
    )

    def both_completed():
        # status.json says completed before the final evaluation: summary.json comes last
        rows = status_rows(workdir / "runs" / "span", workdir)
        done = all(r["state"] == "completed" for r in rows.values())
        return (
            done
            and all((read_json(d / "summary.json") or {}).get("final") for d in runs.values())
            and rows
        )

    rows = wait_for(both_completed, 300, "both runs completed", interval_s=3)
    rows = {re.split(r"[-,]", k)[0]: r for k, r in rows.items()}

    # tsrx status and meta.json name the nodes of each attempt
    assert rows["one"]["nodes"] == SLURM_NODES[0]
    assert rows["two"]["nodes"] == "tsrx-n[1-2]" and rows["two"]["requeues"] >= 1
    starts = [j for j in read_json(runs["two"] / "meta.json")["jobs"] if j["event"] == "start"]
    assert [j["nodes"] for j in starts] == ["tsrx-n[1-2]"] * len(starts) and len(starts) >= 2
    table = tsrx("status", str(workdir / "runs" / "span"), cwd=workdir)
    assert "nodes" in table.stdout and "tsrx-n[1-2]" in table.stdout

    # every rank's log names its node: ranks 0, 1 on the first node, 2, 3 on the second
    for rank, node in ((0, "tsrx-n1"), (1, "tsrx-n1"), (2, "tsrx-n2"), (3, "tsrx-n2")):
        text = (runs["two"] / "logs" / f"rank{rank}.log").read_text()
        assert f"rank {rank} of 4 on node {node}" in text and f"rank{rank}@{node} " in text
        assert "master tsrx-n1:" in text
    resumed = re.search(
        r"resumed from \S+ at step (\d+)", (runs["two"] / "logs" / "rank0.log").read_text()
    )
    assert resumed, "two did not resume from last.pth"
    assert int(resumed.group(1)) == 5  # held at step 4's validation: stopped after step 5

    # Same global batch, same results: every logged loss, the final evaluation, the weights.
    assert train_losses(runs["two"]) == train_losses(runs["one"])
    final_one = read_json(runs["one"] / "summary.json")["final"]["average"]
    assert read_json(runs["two"] / "summary.json")["final"]["average"] == final_one
    w1 = torch.load(runs["one"] / "last.pth", weights_only=True)["model"]
    w2 = torch.load(runs["two"] / "last.pth", weights_only=True)["model"]
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)

    # Only rank 0 writes the run's files; the others touch only their own log link.
    # (runs/span/submitit/ is submitit's: every task writes its own result file there.)
    events = [
        json.loads(line)
        for f in sorted(audit_dir.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    events = [e for e in events if "/span/submitit/" not in e["path"]]
    two_events = [e for e in events if e["path"].startswith(str(runs["two"]) + "/")]
    assert {e["rank"] for e in two_events} == {0, 1, 2, 3}  # the audit saw every rank
    assert {e["node"] for e in two_events} == set(SLURM_NODES)
    by_rank0 = {e["path"].rsplit("/", 1)[-1] for e in two_events if e["rank"] == 0}
    assert {"last.pth", "status.json", "metrics.jsonl", "summary.json", "meta.json"} <= by_rank0
    for e in events:
        if e["rank"] != 0:
            rel = e["path"].split("/span/", 1)[1].partition("/")[2]
            assert re.fullmatch(rf"logs/\.?rank{e['rank']}\.log(\.\d+)?", rel), e


def test_node_lists_expand_like_scontrol(slurm_cluster):
    """The pure-Python expander (used without scontrol) reads host lists as Slurm does."""
    lists = [
        "tsrx-n[1-2]",
        "n[1-3,5],gpu01",
        "gpu[003-005,9]",
        "n[08-11]",
        "r[1-2]n[1-2]",
        "a,b[1]",
        "n[01-2]",
        "n[1-02]",
    ]
    for nodelist in lists:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        assert expand_hostlist(nodelist) == out, nodelist


def test_master_address_that_does_not_resolve_fails_with_a_clear_message(slurm_cluster, workdir):
    # A cluster whose nodes cannot resolve the master's name: every rank stops at once
    # with the reason, instead of waiting for init_process_group's timeout.
    path = tiny_real_experiment(
        workdir / "noname.toml",
        workdir / "data" / "synth",
        "noname",
        "slurm",
        ranks=1,
        steps=2,
        extra=f'''
        [slurm]
        partition = "{MULTI_PARTITION}"
        setup = ["export MASTER_ADDR=no-such-node.invalid"]
    ''',
    )
    res = tsrx(
        "submit",
        str(path),
        "--set",
        "launcher.nodes=2",
        "--set",
        "launcher.gpus_per_node=0",
        cwd=workdir,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    run = next(d for d in (workdir / "runs" / "noname").iterdir() if d.name != "submitit")
    wait_for(lambda: status_rows(run, workdir)[run.name]["state"] == "failed", 180, "state failed")
    for rank, node in ((0, "tsrx-n1"), (1, "tsrx-n2")):
        text = (run / "logs" / f"rank{rank}.log").read_text()
        assert (
            f"rank {rank} on node {node}: the master address 'no-such-node.invalid'" in text
            and "does not resolve" in text
            and "/etc/hosts" in text
        ), text[-3000:]
    assert "does not resolve" in (status_rows(run, workdir)[run.name]["error"] or "")
