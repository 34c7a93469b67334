"""``tsrx eval --ckpt PATH``: one table of ACC / PSNR / SSIM on test/{easy,medium,hard}.

Accepts tsrx checkpoints (their config says what the model is) and foreign files (the
official TextZoom TSRN, meijieru's CRNN, a bare state_dict) with ``--config`` or the
defaults for their format. Every judge (the model's own recognizer, ``[eval.judges]`` or
``--judge``) reads the same SR batch. The protocol, batch size and judges are printed with
the table and stored in the JSON, which also holds every image's prediction.
"""

from __future__ import annotations

from pathlib import Path

import typer

SPLITS = ("easy", "medium", "hard")


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
    recognizer: Path = typer.Option(
        None,
        "--recognizer",
        help="One judge's weights (older form of "
        "--judge): meijieru's crnn.pth or a tsrx checkpoint.",
    ),
    judge: list[str] = typer.Option(
        [],
        "--judge",
        help="A named judge, repeatable: NAME=WEIGHTS "
        "(crnn=crnn.pth, aster=aster.pth.tar; the type is NAME unless "
        "the file says otherwise) or NAME for one that ships its "
        "weights (ppocr). Replaces the config's [eval.judges].",
    ),
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
    device: str = typer.Option(
        None, "--device", help="cpu or cuda (default: cuda when available)."
    ),
    plugin: list[str] = typer.Option(
        [],
        "--plugin",
        help="A plugin file or module providing "
        "components the checkpoint needs (repeatable); tsrx never "
        "imports code a checkpoint names.",
    ),
) -> None:
    """Evaluate a checkpoint and print one table (rows easy/medium/hard/A)."""
    import torch

    from tsrx.checkpoint import detect_format, load_checkpoint
    from tsrx.cli.console import console, err_console
    from tsrx.engine.evaluator import evaluate_model, print_result, take_records
    from tsrx.engine.judges import build_judges, parse_cli_judges
    from tsrx.errors import TsrxError

    raw = load_checkpoint(ckpt)
    fmt = detect_format(raw)
    cfg = _config_for(raw, fmt, config, plugin, ckpt)
    eval_cfg = cfg.get("eval") or {}
    protocol = protocol or eval_cfg.get("protocol", "textzoom")
    if protocol not in ("textzoom", "per-image"):
        raise TsrxError(f"--protocol {protocol!r}: expected textzoom or per-image")
    batch_size = batch_size or eval_cfg.get("batch_size", 50)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    from tsrx.engine.loading import build_loaded

    model, report = build_loaded(cfg, raw, str(ckpt))  # the code of tsrx.load_model
    if report.unexpected:
        err_console.print(
            f"note: {len(report.unexpected)} checkpoint key(s) unused "
            f"(first: {report.unexpected[0]})",
            highlight=False,
            markup=False,
        )
    model.to(dev)
    if judge and recognizer:
        raise TsrxError(
            "--recognizer and --judge: give the judges with --judge only "
            f"(e.g. --judge crnn={recognizer})"
        )
    judges = [
        j.to(dev)
        for j in build_judges(
            eval_cfg,
            model,
            cli=parse_cli_judges(judge),
            recognizer_path=str(recognizer) if recognizer else None,
            warn=lambda m: err_console.print(f"note: {m}", highlight=False, markup=False),
        )
    ]
    datasets = _datasets(cfg, data)
    result = evaluate_model(
        model,
        datasets,
        protocol=protocol,
        batch_size=batch_size,
        device=dev,
        judges=judges,
        baselines=baselines or eval_cfg.get("baselines", False),
        with_predictions=True,
        records=True,
    )
    records = take_records(result)
    result = {
        "checkpoint": str(ckpt),
        "format": fmt,
        "data": str(data) if data else (cfg.get("data") or {}).get("root"),
        **result,
    }
    print_result(console, result, title=str(ckpt))
    if config is None and data is None and recognizer is None and not judge:
        overrides = {
            k: v
            for k, v in (("protocol", protocol), ("batch_size", batch_size))
            if v != eval_cfg.get(k)
        }
        if baselines:
            overrides["baselines"] = True
        cached = _store_in_run_dir(Path(ckpt), result, overrides, records)
        if cached is not None:
            err_console.print(f"cached for tsrx report: {cached}", highlight=False)
    if json_out:
        from tsrx.records import write_records
        from tsrx.runfiles import atomic_write_text, dumps, records_beside

        json_out.parent.mkdir(parents=True, exist_ok=True)
        if records is not None:  # first: a result file present means its records are too
            write_records(records_beside(json_out), records)
        atomic_write_text(json_out, dumps(result, indent=1) + "\n")  # standard JSON: NaN is null
        err_console.print(f"wrote {json_out}", highlight=False)


def _config_for(
    raw: dict, fmt: str, config_file: Path | None, plugins: list[str], ckpt: Path
) -> dict:
    """The resolved config of the model: the checkpoint's, --config's, or the format's default."""
    from tsrx.checkpoint_components import require_checkpoint_components
    from tsrx.config.experiment import load_experiment
    from tsrx.errors import TsrxError
    from tsrx.plugins import load_named_plugins

    load_named_plugins(plugins, ".", where="--plugin")
    if config_file is not None:
        exp = load_experiment(config_file)
        if len(exp.runs) > 1:
            raise TsrxError(
                f"--config {config_file}: it has {len(exp.runs)} runs; the model of "
                "the first is used only when there is one. Pass a single-run file"
            )
        return exp.runs[0].config
    if fmt == "tsrx" and raw.get("config"):
        cfg = raw["config"]
        require_checkpoint_components(cfg, source=str(ckpt), recorded=raw.get("plugins"))
        return cfg
    from tsrx.checkpoint import read_official

    if read_official(raw) is None:
        raise TsrxError(
            f"checkpoint format {fmt!r} does not say which model it holds: pass "
            "--config FILE with a [model] table"
        )
    from tsrx.engine.loading import official_config

    return official_config(raw, "<tsrx eval>")


def _datasets(cfg: dict, data: Path | None) -> dict:
    from tsrx.errors import TsrxError

    data_cfg = dict(cfg.get("data") or {})
    if data is None:
        from tsrx.data.loader import build_dataset

        tables = data_cfg.get("test") or {}
        if not tables:
            raise TsrxError(
                "no test data: pass --data ROOT (holding test/easy, test/medium, "
                "test/hard) or a config with [data.test] tables"
            )
        return {name: build_dataset(t, data_cfg, f"data.test.{name}") for name, t in tables.items()}
    from tsrx.data.textzoom import TextZoomDataset

    found = {s: f"test/{s}" for s in SPLITS if (data / "test" / s).is_dir()}
    if not found:
        raise TsrxError(f"--data {data}: no test/easy, test/medium or test/hard folder in it")
    return {
        s: TextZoomDataset(
            root=str(data),
            roots=[r],
            hr_size=data_cfg.get("hr_size", [32, 128]),
            lr_size=data_cfg.get("lr_size", [16, 64]),
            mask=data_cfg.get("mask", True),
            voc_type=data_cfg.get("voc_type", "all"),
            max_len=data_cfg.get("max_len", 100),
            skip_bad=data_cfg.get("skip_bad", False),
            cache=data_cfg.get("cache", True),
        )
        for s, r in found.items()
    }


def _store_in_run_dir(ckpt: Path, result: dict, overrides: dict, records=None) -> Path | None:
    """A checkpoint inside a run directory: keep its test result where `tsrx report` finds it
    (same cache key as `tsrx report --eval-missing`, from the run's config.toml)."""
    from tsrx.config.load import tomllib
    from tsrx.report import cache

    config_file = ckpt.parent / "config.toml"
    if not config_file.is_file():
        return None
    try:
        run_config = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return cache.store(
        ckpt.parent, ckpt, cache.eval_settings(run_config, overrides or None), result, records
    )
