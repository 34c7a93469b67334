"""`tsrx status` at 80 columns: one line per run, not five (issue 26)."""

from __future__ import annotations

import io

from rich.console import Console

from tsrx.launch.status import RunStatus, table


def _rows() -> list[RunStatus]:
    names = ["head=sidernn+mlp,combiner=uncertainty-1a2b3c4d", "head=dense,combiner=avg-0000abcd"]
    return [
        RunStatus(
            run=n,
            run_dir=f"runs/joint/{n}",
            state="completed",
            step=100000,
            total_steps=100000,
            metrics={"acc": 0.5621, "psnr": 21.37, "ssim": 0.6569},
            elapsed_s=36000,
            job_id="12345678_3",
            requeues=2,
            nodes="node[101-102]",
        )
        for n in names
    ]


def _render(width: int) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(table(_rows(), width=width))
    return [line for line in buf.getvalue().splitlines() if line.strip()]


def test_each_run_is_one_line_at_80_columns():
    lines = _render(80)
    assert all(len(line) <= 80 for line in lines)
    body = [line for line in lines if "completed (2x)" in line]
    assert len(body) == 2  # one line each: nothing folded onto a second line
    assert "100000/100000" in body[0] and "0.5621" in body[0] and "12345678_3" in body[0]
    assert "head=sidernn" in body[0]  # the name is cut with an ellipsis, its start kept


def test_a_wide_terminal_keeps_every_column():
    lines = _render(200)
    assert any("node[101-102]" in line and "0.6569" in line for line in lines)
    assert any("head=sidernn+mlp,combiner=uncertainty-1a2b3c4d" in line for line in lines)


def test_the_study_table_is_one_line_per_run_at_80_columns():
    from tsrx.launch.study import StudyRow, study_table

    rows = [
        StudyRow("joint", s, [], level=2, state="blocked", why="never started: upstream " * 4)
        for s in _rows()
    ]
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(study_table(rows, width=80))
    lines = [line for line in buf.getvalue().splitlines() if "blocked" in line]
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    assert all("3: joint" in line and "12345678_3" in line for line in lines)
