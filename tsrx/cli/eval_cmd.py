"""``tsrx eval --ckpt PATH``: one table of ACC / PSNR / SSIM on test/{easy,medium,hard}.

Accepts tsrx checkpoints (their config says what the model is) and foreign files (the
official TextZoom TSRN, meijieru's CRNN, a bare state_dict) with ``--config`` or the
defaults for their format. Every judge (the model's own recognizer, ``[eval.judges]`` or
``--judge``) reads the same SR batch. The protocol, batch size and judges are printed with
the table and stored in the JSON, which also holds every image's prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tsrx.cli.options import (
    DEVICE_DEFAULT,
    DEVICE_HELP,
    JUDGE_HELP,
    JUDGE_PRECISION_HELP,
    PLUGIN_HELP,
    PRECISION_HELP,
    RECOGNIZER_MOVED,
)

if TYPE_CHECKING:
    from tsrx.records import Records


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="Checkpoint: tsrx, TextZoom TSRN, meijieru CRNN."
    ),
    config: Path = typer.Option(
        None,
        "--config",
        help="Experiment TOML describing the model "
        "(for foreign checkpoints; a tsrx checkpoint carries its own).",
    ),
    data: Path = typer.Option(
        None,
        "--data",
        help="Data root holding test/{easy,medium,hard} "
        "(default: the config's [data.test] tables).",
    ),
    recognizer: str = typer.Option(None, "--recognizer", hidden=True),
    judge: list[str] = typer.Option([], "--judge", help=JUDGE_HELP),
    protocol: str = typer.Option(
        None,
        "--protocol",
        help="textzoom (per batch, as the reference "
        "code) or per-image (default: the config's [eval] protocol).",
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", min=1, help="Evaluation batch size (default: [eval] batch_size, 50)."
    ),
    json_out: Path = typer.Option(None, "--json", help="Write the result (with predictions) here."),
    baselines: bool = typer.Option(False, "--baselines", help="Add the bicubic and HR rows."),
    device: str = typer.Option(DEVICE_DEFAULT, "--device", help=DEVICE_HELP),
    precision: str = typer.Option(None, "--precision", help=PRECISION_HELP),
    judge_precision: str = typer.Option(None, "--judge-precision", help=JUDGE_PRECISION_HELP),
    reading_store: bool = typer.Option(
        True,
        "--reading-store/--no-reading-store",
        help="Frozen judges reuse what they read of the same images before, in any process "
        "(TSRX_READING_STORE: its folder, or off; default ~/.cache/tsrx/readings).",
    ),
    plugin: list[str] = typer.Option(
        [],
        "--plugin",
        help=PLUGIN_HELP,
    ),
) -> None:
    """Evaluate a checkpoint and print one table (rows easy/medium/hard/A)."""
    from tsrx.checkpoint import load_checkpoint
    from tsrx.cli.console import console, err_console
    from tsrx.data.roots import is_synthetic
    from tsrx.engine.config import eval_section
    from tsrx.engine.evaluator import (
        evaluate_config,
        evaluation_sets,
        readings_line,
        take_records,
    )
    from tsrx.engine.judge_build import parse_cli_judges
    from tsrx.engine.loading import open_checkpoint
    from tsrx.engine.metrics import PROTOCOLS
    from tsrx.engine.precision import check_precision
    from tsrx.engine.result_view import print_result
    from tsrx.errors import TsrxError

    if protocol is not None and protocol not in PROTOCOLS:
        raise TsrxError(f"--protocol {protocol!r}: expected {' or '.join(PROTOCOLS)}")
    if recognizer is not None:
        raise TsrxError(RECOGNIZER_MOVED.format(option="--recognizer", value=recognizer))
    from tsrx.plugins import load_named_plugins

    load_named_plugins(plugin, ".", where="--plugin")
    from tsrx.engine.threads import configure_threads

    threads = configure_threads()  # this process's share of the cores, as a run's (issue 14)
    raw = load_checkpoint(ckpt)
    loaded = open_checkpoint(
        ckpt, config=_user_config(config), stored=False, device=device, obj=raw
    )  # the code of tsrx.load_model
    if loaded.report.unexpected:
        err_console.print(
            f"note: {len(loaded.report.unexpected)} checkpoint key(s) unused "
            f"(first: {loaded.report.unexpected[0]})",
            highlight=False,
            markup=False,
        )
    loaded.with_judges(
        cli=parse_cli_judges(judge),
        warn=lambda m: err_console.print(f"note: {m}", highlight=False, markup=False),
    )
    cfg = loaded.config
    if precision is not None:
        check_precision(precision, loaded.device, "--precision")
    if judge_precision is not None:
        check_precision(judge_precision, loaded.device, "--judge-precision")
    tallies = [dict(j.tally) for j in loaded.judges]
    result = evaluate_config(
        loaded.model,
        evaluation_sets(cfg, data),
        cfg,
        judges=loaded.judges,
        device=loaded.device,
        protocol=protocol,
        batch_size=batch_size,
        baselines=baselines or None,
        with_predictions=True,
        records=True,
        precision=precision,
        reading_store=None if reading_store else False,
        judge_precision=judge_precision,
    )
    line = readings_line(loaded.judges, tallies)
    if line:  # why a second evaluation of the same test set is faster
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)
    records = take_records(result)
    result = {
        "checkpoint": str(ckpt),
        "format": loaded.format,
        "data": str(data) if data else (cfg.get("data") or {}).get("root"),
        **result,
        "threads": {"threads": threads["threads"], "source": threads["source"]},
    }
    if result["data"] and is_synthetic(result["data"]):
        result["synthetic_data"] = True  # as a run's summary.json records it
    print_result(console, result, title=str(ckpt))
    if result.get("synthetic_data"):
        console.print(
            f"data: SYNTHETIC ({result['data']} was made by tsrx data synth / data.synth), "
            "not TextZoom",
            highlight=False,
            markup=False,
        )
    if json_out:  # what was asked for first: an optional write below never costs it
        from tsrx.records import write_records
        from tsrx.runfiles import atomic_write_text, dumps, records_beside

        json_out.parent.mkdir(parents=True, exist_ok=True)
        if records is not None:  # first: a result file present means its records are too
            write_records(records_beside(json_out), records)
        atomic_write_text(json_out, dumps(result, indent=1) + "\n")  # standard JSON: NaN is null
        err_console.print(f"wrote {json_out}", highlight=False)
    if config is None and data is None and not judge:
        configured = eval_section(cfg)
        overrides = {
            k: v
            for k, v in (
                ("protocol", result["protocol"]),
                ("batch_size", result["batch_size"]),
                ("precision", result["precision"]),
                ("judge_precision", result["judge_precision"]),
            )
            if v != getattr(configured, k)
        }
        if baselines:
            overrides["baselines"] = True
        try:
            cached = _store_in_run_dir(Path(ckpt), result, overrides, records)
        except OSError as exc:  # a read-only run directory: the cache is optional
            err_console.print(
                f"warning: result not cached for tsrx report ({exc.strerror or exc}: "
                f"{exc.filename or ckpt.parent}); the evaluation itself is complete",
                highlight=False,
                markup=False,
            )
        else:
            if cached is not None:
                err_console.print(f"cached for tsrx report: {cached}", highlight=False)


def _user_config(config_file: Path | None) -> dict[str, Any] | None:
    """The model of a user's ``--config`` (its one run), or None: the checkpoint's own."""
    from tsrx.config.experiment import load_experiment
    from tsrx.errors import TsrxError

    if config_file is None:
        return None
    exp = load_experiment(config_file)
    if len(exp.runs) > 1:
        raise TsrxError(
            f"--config {config_file}: it has {len(exp.runs)} runs; the model of "
            "the first is used only when there is one. Pass a single-run file"
        )
    return exp.runs[0].config


def _store_in_run_dir(
    ckpt: Path, result: dict[str, Any], overrides: dict[str, Any], records: Records | None = None
) -> Path | None:
    """A checkpoint inside a run directory: keep its test result where `tsrx report` finds it
    (same cache key as `tsrx report --eval-missing`, from the run's config.toml)."""
    from tsrx.engine import result_cache as cache
    from tsrx.errors import TsrxError
    from tsrx.runfiles import read_config

    try:
        run_config = read_config(ckpt.parent)
    except TsrxError:  # a damaged config.toml beside it: not a run directory to cache into
        return None
    if run_config is None:
        return None
    return cache.store(
        ckpt.parent, ckpt, cache.eval_settings(run_config, overrides or None), result, records
    )
