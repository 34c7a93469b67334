"""``tsrx ckpt inspect|compose``: look into checkpoint files; compose parts into one file.

``compose`` is the user's workflow after training parts separately: build the whole
model, load the parts' weights into it in one shot, evaluate it once, save one tsrx
checkpoint that later runs load with ``model.init.whole``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tsrx.cli.options import DEVICE_DEFAULT, DEVICE_HELP, JUDGE_HELP

app = typer.Typer(
    help="Inspect checkpoints; compose part checkpoints into one.", no_args_is_help=True
)


# -- inspect ------------------------------------------------------------------------------
def _config_summary(config: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if config.get("name"):
        rows.append(("experiment", str(config["name"])))
    model = config.get("model") or {}
    for part in ("sr", "recognizer", "head"):
        table = model.get(part)
        if table:
            opts = ", ".join(f"{k}={v}" for k, v in table.items() if k != "type")
            rows.append((f"model.{part}", table.get("type", "?") + (f" ({opts})" if opts else "")))
    for key in ("coupling", "feature_layer", "freeze", "rec_input"):
        if key in model and (key != "feature_layer" or model.get("coupling") == "feature"):
            rows.append((f"model.{key}", str(model[key])))
    data = config.get("data") or {}
    for key in ("root", "mask"):
        if key in data:
            rows.append((f"data.{key}", str(data[key])))
    train = config.get("train") or {}
    for key in ("steps", "batch_size"):
        if key in train:
            rows.append((f"train.{key}", str(train[key])))
    return rows


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(
        ..., help="Checkpoint file (tsrx, TextZoom, meijieru CRNN or a state_dict)."
    ),
    keys: bool = typer.Option(False, "--keys", help="Also list every tensor with its shape."),
) -> None:
    """Format detected, parts with parameter counts, step and a summary of the config."""
    from rich.table import Table

    from tsrx.checkpoint import detect_format, load_checkpoint, parameter_counts, state_dict_for
    from tsrx.cli.console import console

    obj = load_checkpoint(path)
    fmt = detect_format(obj)
    state = state_dict_for(obj)
    console.print(
        f"[bold]{path}[/]: format [bold]{fmt}[/]"
        + (f" (version {obj.get('format_version')})" if fmt == "tsrx" else "")
    )
    from tsrx.published import describe

    published = describe(path, obj)  # which published file, by checksum or key layout
    if published:
        console.print(published, highlight=False, markup=False)
    counts = parameter_counts(state)
    from tsrx.engine.loading import exact_parameter_counts

    exact = exact_parameter_counts(obj)
    table = Table(title="parts")
    for col in ("part", "tensors", "parameters"):
        table.add_column(col, justify="left" if col == "part" else "right")
    for part, (n_tensors, n_params) in counts.items():
        shown = (
            f"{exact[part]:,}"
            if exact and part in exact
            else (f"~{n_params:,}" if exact else f"{n_params:,}")
        )  # ~: this part estimated from the file
        table.add_row(part, str(n_tensors), shown)
    table.caption = (
        "parameters (not buffers) of the model the checkpoint describes, built here"
        if exact
        else "parameters estimated from the file: floating tensors other than "
        "BatchNorm statistics (other buffers count too)"
    )
    console.print(table)
    info: list[tuple[str, str]] = []
    if fmt == "tsrx":
        for key in ("step", "epoch"):
            if obj.get(key) is not None:
                info.append((key, str(obj[key])))
        info += _config_summary(obj.get("config") or {})
        for key in ("optimizer", "scheduler", "scaler", "rng", "sampler"):
            info.append((key, "saved" if obj.get(key) is not None else "-"))
        plugins = obj.get("plugins") or []
        if plugins:
            info.append(("plugins", ", ".join(_plugin_label(p) for p in plugins)))
    elif fmt != "state_dict":
        from tsrx.checkpoint import read_official

        official = read_official(obj)  # not None: detect_format named its reader
        if official is not None:
            for part, table in official.model.items():
                info.append((f"model.{part}", ", ".join(f"{k}={v}" for k, v in table.items())))
            info += [(k, str(v)) for k, v in official.info.items()]
    for key, value in info:
        console.print(f"{key}: {value}", highlight=False, markup=False)
    if keys:
        for name, tensor in state.items():
            console.print(
                f"{name} {tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}",
                highlight=False,
                markup=False,
            )


def _plugin_label(p: Any) -> str:
    if isinstance(p, dict):
        version = p.get("version") or ""
        return f"{p.get('name', '?')}{' ' + version if version else ''}"
    return str(p)


# -- compose ------------------------------------------------------------------------------
def _resolve_config(
    config_file: Path | None, run: str | None, sets: list[str], parts: dict[str, str]
) -> dict[str, Any]:
    from tsrx.config.experiment import load_experiment, parse_overrides, resolve_run
    from tsrx.errors import ConfigError, TsrxError

    if config_file is not None:
        exp = load_experiment(config_file, sets, only=[run] if run else None)
        if len(exp.runs) > 1:
            raise TsrxError(
                f"{config_file} has {len(exp.runs)} runs; pick one with --run "
                f"({', '.join(r.name for r in exp.runs)})"
            )
        return exp.runs[0].config
    # Without a file: the default TSRN and CRNN, with whichever parts were given.
    raw: dict[str, Any] = {"name": "compose", "model": {}}
    if "sr" in parts:
        raw["model"]["sr"] = {"type": "tsrn"}
    if "recognizer" in parts:
        raw["model"]["recognizer"] = {"type": "crnn"}
    if "head" in parts:
        raise TsrxError("--head needs --config: the head's type and sizes come from [model.head]")
    from tsrx.config.load import set_dotted

    for key, value in parse_overrides(sets).items():
        set_dotted(raw, key, value)
    config, issues = resolve_run(raw, {}, "<tsrx ckpt compose>")
    if issues:
        raise ConfigError(issues)
    return config


def _test_sets(config: dict[str, Any], data: Path | None) -> dict[str, Any]:
    """``data.test`` of the config; without it, TextZoom's test/{easy,medium,hard} under
    data.root (tsrx.engine.evaluator.evaluation_sets, as ``tsrx eval`` finds them)."""
    from tsrx.engine.evaluator import evaluation_sets
    from tsrx.errors import TsrxError

    data_cfg = config.get("data") or {}
    root = data if data is not None else (None if data_cfg.get("test") else data_cfg.get("root"))
    try:
        return evaluation_sets(config, root, where="data.root")
    except TsrxError as exc:
        raise TsrxError(f"{exc}; or pass --no-eval") from None


@app.command("compose")
def compose_cmd(
    output: Path = typer.Option(
        ..., "-o", "--output", help="The composed tsrx checkpoint to write."
    ),
    sr: Path = typer.Option(
        None, "--sr", help="SR checkpoint (tsrx, TextZoom model_best.pth, state_dict)."
    ),
    recognizer: Path = typer.Option(
        None, "--recognizer", help="Recognizer checkpoint (tsrx, crnn.pth, state_dict)."
    ),
    head: Path = typer.Option(
        None, "--head", help="Head checkpoint (tsrx or state_dict); needs --config."
    ),
    config_file: Path = typer.Option(
        None, "--config", help="Experiment TOML that defines [model] (default: TSRN + CRNN)."
    ),
    run: str = typer.Option(None, "--run", help="The run of --config to use when it has several."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: --set model.sr.stn=false."
    ),
    data: Path = typer.Option(
        None, "--data", help="Data root for the evaluation (sets data.root)."
    ),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the evaluation on the test set."),
    judge: list[str] = typer.Option(
        [],
        "--judge",
        help="Who reads the SR images for ACC when the model has no recognizer: " + JUDGE_HELP,
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", help="Evaluation batch size (default: [eval] batch_size)."
    ),
    device: str = typer.Option(DEVICE_DEFAULT, "--device", help=DEVICE_HELP),
    allow_shape_mismatch: bool = typer.Option(
        False,
        "--allow-shape-mismatch",
        help="Skip tensors whose shapes do not fit, instead of failing.",
    ),
) -> None:
    """Load part checkpoints into the whole model in one shot, evaluate once, save one file."""
    from tsrx.engine.judge_build import parse_cli_judges
    from tsrx.errors import TsrxError

    judges_cli = parse_cli_judges(judge)  # a wrong spelling fails before anything is built
    parts = {k: str(v) for k, v in (("sr", sr), ("recognizer", recognizer), ("head", head)) if v}
    if not parts:
        raise TsrxError("ckpt compose: give at least one of --sr, --recognizer, --head")
    sets = list(set_) + ([f"data.root={data}"] if data is not None else [])
    config = _resolve_config(config_file, run, sets, parts)
    from tsrx.engine.threads import configure_threads

    configure_threads()  # this process's share of the cores, as a run's (issue 14)
    model_cfg = config.setdefault("model", {})
    for part in parts:
        if not model_cfg.get(part):
            raise TsrxError(f"--{part} given but the config has no [model.{part}] to load it into")
    model_cfg["init"] = {**(model_cfg.get("init") or {}), **parts}
    if allow_shape_mismatch:
        model_cfg["allow_shape_mismatch"] = True

    from tsrx.checkpoint import make_checkpoint, save_checkpoint, unwrap
    from tsrx.cli.console import console
    from tsrx.models.build import build_model
    from tsrx.plugins import loaded_plugins

    model = build_model(config, console=console)
    result = None
    if not no_eval:
        from tsrx.engine.evaluator import evaluate_config, without_predictions
        from tsrx.engine.judge_build import build_judges
        from tsrx.engine.loading import resolve_device
        from tsrx.engine.result_view import result_table

        dev = resolve_device(device)
        datasets = _test_sets(config, data)
        judges = [j.to(dev) for j in build_judges(config.get("eval") or {}, model, cli=judges_cli)]
        result = evaluate_config(
            model.to(dev),
            datasets,
            config,
            judges=judges,
            device=dev,
            batch_size=batch_size,
            baselines=False,
            with_predictions=False,
        )
        console.print(result_table(result, title=f"composed model on {config['data']['root']}"))
        result = without_predictions(result)
    sources = dict(model_cfg["init"])
    model_cfg["init"] = {}  # the composed file is the one to load from now on
    payload = make_checkpoint(
        unwrap(model).to("cpu").state_dict(),
        step=0,
        config=config,
        plugins=[
            {"name": p.name, "package": p.package, "version": p.version} for p in loaded_plugins()
        ],
        metrics={"compose": result} if result else None,
        composed_from=sources,
    )
    save_checkpoint(output, payload)
    console.print(f'saved {output} (load it with model.init.whole = "{output}")', highlight=False)
