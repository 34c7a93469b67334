"""``python -m bench``: run the benchmarks, print one table, write ``bench/results.json``.

    python -m bench                      # everything, reference sizes (minutes)
    python -m bench --smoke              # tiny sizes, what CI runs (under a minute)
    python -m bench --only train eval    # a subset
    python -m bench --only threads       # default vs. set CPU threads, idle vs. loaded
    python -m bench --only judges        # eval speed with crnn + aster + moran + ppocr + easyocr
    python -m bench --only judges --textzoom-size   # ... on all 4,373 images, also on a CPU
    python -m bench --only judges --judge-precision bf16   # ... the judges reading in bf16
    python -m bench --only train --tsrn-file /tmp/wt/plugins/tsrn.py   # a candidate TSRN
    python -m bench --device cuda --precision bf16 --out bench/results_gpu.json
    python -m bench --only precision     # bf16 against fp32: 100 training losses, PSNR, judges' ACC
    python -m bench --only records       # per-image records: size, write, load 500k images, a paired test
    python -m bench --only zoo           # every backbone of experiments/zoo.toml: train/eval samples/s

Exit status 1 when a benchmark raised (its row says why); targets missed are shown in the
table and the JSON but do not fail the command: they are measurements, not tests.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

# tsrx before torch, as in a tsrx command: OpenMP's idle spin cut short (tsrx.openmp_wait),
# for the baseline's rounds too (it only matters where tsrx runs threads of its own)
import tsrx  # noqa: F401
from bench.common import atomic_write_json, machine, row

NAMES = ("train", "eval", "precision", "judges", "data", "cli", "ddp", "zoo", "threads", "records")
LOADER_TARGET = 5.0


def data_rows(smoke: bool, train_rows: list[dict]) -> list[dict]:
    """bench_data's rows in the table's shape, plus the loader against the train step."""
    from bench import bench_data

    rows = [
        row(
            "data",
            r["path"],
            r.get("samples_per_s"),
            "samples/s",
            samples=r.get("samples"),
            seconds=r.get("seconds"),
        )
        for r in bench_data.run(smoke=smoke)
    ]
    loaders = [r for r in rows if "DataLoader" in r["name"] and r["value"]]
    step = [r for r in train_rows if r["name"].startswith("tsrx") and r["unit"] == "samples/s"]
    if loaders and step:
        best = max(loaders, key=lambda r: r["value"])
        consumed = max(r["value"] for r in step)
        ratio = best["value"] / consumed
        rows.append(
            row(
                "data",
                "best loader / fastest tsrx train step",
                ratio,
                "x",
                f">= {LOADER_TARGET:g}",
                ratio >= LOADER_TARGET,
                loader=best["name"],
                train_samples_per_s=consumed,
            )
        )
    return rows


def run_one(name: str, args: argparse.Namespace, done: list[dict]) -> list[dict]:
    if name == "train":
        from bench import bench_train

        return bench_train.run(
            args.smoke,
            compile=args.compile,
            tsrn_file=args.tsrn_file,
            device=args.device,
            precision=args.precision,
        )
    if name == "eval":
        from bench import bench_eval

        return bench_eval.run(args.smoke, device=args.device, precision=args.precision)
    if name == "precision":
        from bench import bench_precision

        return bench_precision.run(args.smoke)
    if name == "judges":
        from bench import bench_judges

        return bench_judges.run(
            args.smoke,
            device=args.device,
            textzoom_size=args.textzoom_size,
            precision=args.precision,
            judge_precision=args.judge_precision,
        )
    if name == "data":
        return data_rows(args.smoke, [r for r in done if r["item"] == "train"])
    if name == "cli":
        from bench import bench_cli

        return bench_cli.run(args.smoke)
    if name == "records":
        from bench import bench_records

        return bench_records.run(args.smoke)
    if name == "zoo":
        from bench import bench_zoo

        return bench_zoo.run(args.smoke, device=args.device, precision=args.precision)
    if name == "threads":
        from bench import bench_threads

        return bench_threads.run(args.smoke)
    from bench import bench_ddp

    return bench_ddp.run(args.smoke)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(rows: list[dict], info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"tsrx benchmarks ({info['cpu']}, {info['cores']} cores, "
        f"torch {info['torch']}, {info['torch_threads']} threads)"
    )
    for col in ("item", "measure", "value", "unit", "target", "ok"):
        table.add_column(col, justify="right" if col == "value" else "left")
    marks = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}
    for r in rows:
        table.add_row(
            r["item"], r["name"], _fmt(r["value"]), r["unit"], r["target"] or "", marks[r["ok"]]
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=NAMES,
        default=list(NAMES),
        metavar="NAME",
        help=f"run only these: {', '.join(NAMES)}",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads in this process")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory, as in a tsrx command (tsrx.memory_reuse); the baseline "
        "shares the process, so it gains too (default: glibc's defaults, as a user runs it)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (train and eval)")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="train.precision / eval.precision of the train, eval and zoo rows (the train "
        "bench times tsrx bf16 beside fp32 either way)",
    )
    parser.add_argument(
        "--judge-precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="eval.judge_precision of the judges rows (the precision bench measures both)",
    )
    parser.add_argument("--amp", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help="also time train.compile = true")
    parser.add_argument(
        "--textzoom-size",
        action="store_true",
        help="judges: evaluate all 4,373 images on the CPU too (no extrapolation; long)",
    )
    parser.add_argument("--tsrn-file", help="time this tsrn.py instead of the installed one")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    args = parser.parse_args(argv)
    if args.amp is not None:  # the old spelling, refused rather than reinterpreted
        parser.error(
            f"--amp {args.amp}: renamed --precision (fp32 or bf16; --amp none is --precision fp32)"
        )
    del args.amp

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    if args.keep_freed_memory:
        from tsrx.memory_reuse import keep_freed_memory

        info["malloc"] = keep_freed_memory()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    rows: list[dict] = []
    failed = False
    for name in [n for n in NAMES if n in args.only]:
        t0 = time.perf_counter()
        try:
            got = run_one(name, args, rows)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed = True
            got = [
                row(
                    name,
                    f"error: {type(exc).__name__}: {exc}",
                    None,
                    "",
                    None,
                    False,
                    traceback=traceback.format_exc()[-2000:],
                )
            ]
        for r in got:
            r["detail"].setdefault("bench_seconds", round(time.perf_counter() - t0, 2))
        rows.extend(got)
    info["load_average_end"] = machine().get("load_average")
    result = {
        "started": started,
        "seconds": round(time.perf_counter() - start, 1),
        "smoke": args.smoke,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": info,
        "rows": rows,
    }
    atomic_write_json(Path(args.out), result)
    print_table(rows, info)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
