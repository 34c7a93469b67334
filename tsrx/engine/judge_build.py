"""Building judges: from ``[eval.judges]`` tables, checkpoints and the CLI's ``--judge``.

Apart from tsrx/engine/judges.py (how a judge reads) because building is the other job: it
resolves a judge's type from its table, its name and what its weights file says, loads and
freezes those weights, and refuses what cannot judge. Where judges come from:

- the model's own recognizer (with its head), always first and named ``own``;
- ``[eval.judges]``: ``NAME = {type = "...", weights = "...", ...recognizer options}``;
  ``weights`` is a checkpoint (tsrx, or an official layout read by ``read_official``); a
  recognizer that ships its weights (``pretrained = True``, e.g. ``ppocr``) needs none;
  ``optional = true`` skips a judge whose package is not installed (with a warning);
- the older single judge, ``[eval] judge`` + ``judge_weights``, named after its type;
- ``tsrx eval --judge NAME=WEIGHTS`` / ``--judge NAME`` (these replace the configured ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tsrx.engine.judges import OWN, Judge, own_judge
from tsrx.errors import TsrxError

NO_WEIGHTS_NEEDED = "pretrained"  # class attribute of a recognizer that ships its weights


def parse_cli_judges(values: list[str]) -> dict[str, dict[str, Any]]:
    """``--judge NAME=WEIGHTS`` / ``--judge NAME`` -> judge tables (type resolved at build)."""
    out: dict[str, dict[str, Any]] = {}
    for value in values:
        name, sep, weights = value.partition("=")
        name, weights = name.strip(), weights.strip()
        if not sep and _looks_like_a_file(name):
            raise TsrxError(
                f"--judge {value}: --judge takes NAME=WEIGHTS (or NAME for a judge that ships "
                f"its weights) in every command; for this file: --judge "
                f"{Path(name).stem.split('.')[0] or 'crnn'}={value}"
            )
        if not name or (sep and not weights):
            raise TsrxError(
                f"--judge {value!r}: expected NAME=WEIGHTS (e.g. crnn=crnn.pth) or "
                "NAME for a judge that ships its weights (e.g. ppocr)"
            )
        if name in out:
            raise TsrxError(
                f"--judge: judge name {name!r} given twice; name each judge once "
                "(e.g. --judge crnn=a.pth --judge crnn_ft=b.pth)"
            )
        out[name] = {"weights": weights} if weights else {}
    return out


def _looks_like_a_file(value: str) -> bool:
    """A --judge value of the older path-only spelling (``--judge crnn.pth``)."""
    return "/" in value or "\\" in value or "." in value or Path(value).exists()


def judge_tables(
    eval_cfg: dict[str, Any],
    cli: dict[str, dict[str, Any]] | None = None,
    recognizer_path: str | None = None,
) -> tuple[dict[str, dict[str, Any]], str]:
    """The judge tables to build and where they came from (for error messages)."""
    if cli:
        return cli, "--judge"
    if recognizer_path:
        # the older single judge: a CRNN unless [eval] judge or the file says otherwise
        return {
            "": {
                "type": (eval_cfg.get("judge") or {}).get("type"),
                "default_type": "crnn",
                "weights": recognizer_path,
                **_options(eval_cfg.get("judge")),
            }
        }, "--recognizer"
    judges = eval_cfg.get("judges") or {}
    if not isinstance(judges, dict):
        raise TsrxError(
            f"eval.judges: expected a table of named judges, e.g. "
            f'judges.ppocr = {{type = "ppocr"}}; got {judges!r}'
        )
    if judges and (eval_cfg.get("judge_weights") or eval_cfg.get("judge")):
        raise TsrxError(
            "[eval] sets both judges and the older judge / judge_weights: move the "
            'latter into eval.judges, e.g. judges.crnn = {type = "crnn", weights = '
            f'"{eval_cfg.get("judge_weights") or "crnn.pth"}"}}'
        )
    if judges:
        return {name: dict(t) for name, t in judges.items()}, "eval.judges"
    if eval_cfg.get("judge_weights"):
        table = eval_cfg.get("judge") or {"type": "crnn"}
        return {"": {**table, "weights": eval_cfg["judge_weights"]}}, "eval.judge_weights"
    return {}, "eval.judges"


def _options(table: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (table or {}).items() if k != "type"}


def build_judges(
    eval_cfg: dict[str, Any],
    model: nn.Module | None = None,
    *,
    cli: dict[str, dict[str, Any]] | None = None,
    recognizer_path: str | None = None,
    base_dir: str | Path = ".",
    warn: Any = None,
) -> list[Judge]:
    """Every judge of an evaluation: the model's own recognizer first, then the named ones.

    ``warn(msg)`` receives the notes of optional judges left out (default: logging).
    """
    judges: list[Judge] = []
    own = own_judge(model) if model is not None else None
    if own is not None:
        judges.append(own)
    tables, where = judge_tables(eval_cfg, cli, recognizer_path)
    for name, table in tables.items():
        key = f"{where}.{name}" if where == "eval.judges" else where
        try:
            judge = build_judge_table(name, table, key, base_dir)
        except JudgeUnavailable as exc:
            msg = f"{key}: left out: {exc}"
            if warn is None:
                import logging

                logging.getLogger("tsrx.engine").warning(msg)
            else:
                warn(msg)
            continue
        if any(j.name == judge.name for j in judges):
            raise TsrxError(
                f"{key}: judge name {judge.name!r} is used twice"
                + (" (own is the model's own recognizer)" if judge.name == OWN else "")
            )
        judges.append(judge)
    return judges


def validation_judges(
    judges: list[Judge], eval_cfg: dict[str, Any], names: list[str] | None
) -> list[Judge]:
    """The judges of training's validations: ``[eval] val_judges`` (None: every judge).

    A name must be a judge of the run: ``own`` where the model has a recognizer, or a key of
    ``[eval.judges]``; an optional judge that was left out (its package missing) is skipped.
    """
    if names is None:
        return judges
    configured = set(judge_tables(eval_cfg)[0]) - {""}
    known = {j.name for j in judges} | configured
    for i, name in enumerate(names):
        if name not in known:
            raise TsrxError(
                f"eval.val_judges[{i}]: {name!r} is not a judge of this run; judges: "
                f"{', '.join(sorted(known)) or '(none: set [eval.judges])'}"
            )
    return [j for j in judges if j.name in names]


class JudgeUnavailable(Exception):
    """An optional judge whose package is not installed."""


def _checkpoint_type(obj: Any) -> tuple[str | None, dict[str, Any], str]:
    """(recognizer type, recognizer + head tables, what the file is) as the checkpoint says."""
    from tsrx.checkpoint import detect_format, read_official

    fmt = detect_format(obj)
    if fmt == "tsrx":
        model = (obj.get("config") or {}).get("model") or {}
        rec = model.get("recognizer")
        return (
            (rec or {}).get("type"),
            {"recognizer": rec, "head": model.get("head")},
            "a tsrx checkpoint"
            + (f" of a {rec['type']} recognizer" if rec else " without a recognizer"),
        )
    if fmt == "state_dict":
        return None, {}, "a bare state_dict"
    official = read_official(obj)  # not None: detect_format named its reader
    model = official.model if official is not None else {}
    rec = model.get("recognizer")
    parts = ", ".join(sorted(model)) or "nothing"
    return ((rec or {}).get("type"), {"recognizer": rec}, f"a {fmt} checkpoint (holding {parts})")


def build_judge_table(
    name: str, table: dict[str, Any], where: str, base_dir: str | Path = "."
) -> Judge:
    """One judge from ``{type, weights, optional, ...options}`` (``name`` "" = named by type)."""
    from tsrx.checkpoint import detect_format, load_checkpoint, load_into, state_dict_for
    from tsrx.models.build import build_parts
    from tsrx.models.joint import JointModel
    from tsrx.registry import RECOGNIZERS

    table = dict(table)
    weights = table.pop("weights", None)
    optional = bool(table.pop("optional", False))
    wanted = table.pop("type", None)
    default_type = table.pop("default_type", None)
    ckpt, what = None, ""
    from_file: dict[str, Any] = {}
    if weights:
        path = Path(weights)
        if not path.is_absolute() and not path.exists():
            path = Path(base_dir) / path
        try:
            ckpt = load_checkpoint(path)
        except TsrxError as exc:
            raise TsrxError(f"{where}: judge weights: {exc}") from None
        file_type, from_file, what = _checkpoint_type(ckpt)
        if detect_format(ckpt) == "tsrx" and from_file.get("recognizer"):
            # the components a checkpoint names must come from the user's plugins: nothing is
            # imported on a checkpoint's say-so (docs/guarantees.md)
            from tsrx.checkpoint_components import require_checkpoint_components

            require_checkpoint_components(
                {"model": from_file}, source=f"judge weights {path}", recorded=ckpt.get("plugins")
            )
        if wanted is None and name and file_type is None:
            wanted = name  # --judge NAME=WEIGHTS: the type is NAME unless the file says
        if wanted is not None and file_type is not None and file_type != wanted:
            if where == "--judge" and wanted == name:
                wanted = file_type  # --judge mine=crnn.pth: the file says crnn
            else:
                raise TsrxError(
                    f"{where}: judge {name or wanted!r} is a {wanted} recognizer but "
                    f"its weights {path} are {what}"
                )
        if wanted is None:
            wanted = file_type or default_type
        if from_file.get("recognizer") is None and detect_format(ckpt) != "state_dict":
            raise TsrxError(
                f"{where}: judge weights {path} are {what}: no recognizer to judge with"
            )
    else:
        wanted = wanted or name
    if not wanted:
        raise TsrxError(f'{where}: a judge needs a type (e.g. {{type = "crnn", weights = ...}})')
    if wanted not in RECOGNIZERS:
        from tsrx.errors import suggest

        raise TsrxError(
            f"{where}: {wanted!r} is not a recognizer{suggest(wanted, RECOGNIZERS.names())}; "
            f"known: {', '.join(RECOGNIZERS.names())}"
        )
    name = name or wanted
    rec_table = {
        "type": wanted,
        **{
            k: v
            for k, v in (from_file.get("recognizer") or {}).items()
            if k != "type" and from_file.get("recognizer", {}).get("type") == wanted
        },
        **table,
    }
    if ckpt is None and not getattr(RECOGNIZERS.get(wanted), NO_WEIGHTS_NEEDED, False):
        raise TsrxError(
            f"{where}: judge {name!r} ({wanted}) needs trained weights: "
            f'{name} = {{type = "{wanted}", weights = "FILE"}} (or --judge '
            f"{name}=FILE); an untrained recognizer's accuracy means nothing"
        )
    try:
        parts = build_parts({"recognizer": rec_table, "head": from_file.get("head")}, where)
    except TsrxError as exc:
        if optional and "pip install" in str(exc):
            raise JudgeUnavailable(str(exc)) from None
        raise
    rec, head = parts["recognizer"], parts["head"]
    description = wanted
    if ckpt is not None:
        holder = JointModel(recognizer=rec, head=head, rec_input="hr")
        whole = state_dict_for(ckpt, None if detect_format(ckpt) == "tsrx" else "recognizer")
        state = {k: v for k, v in whole.items() if k.split(".", 1)[0] in ("recognizer", "head")}
        report = load_into(holder, state, source=str(weights))
        if report.missing or not report.loaded:
            first = report.missing[0] if report.missing else "every key"
            raise TsrxError(
                f"{where}: judge weights {weights} do not fit a {wanted} recognizer: "
                f"{len(report.missing)} weight(s) missing (first: {first}); the file "
                f"is {what}"
            )
        description = f"{wanted} ({weights})"
    elif hasattr(rec, "describe"):
        description = f"{wanted}: {rec.describe()}"
    for module in (rec, head):
        if module is not None:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
    return Judge(
        name,
        description,
        rec,
        head,
        options={"recognizer": rec_table, "head": from_file.get("head")},
    )


__all__ = [
    "build_judges",
    "build_judge_table",
    "parse_cli_judges",
    "judge_tables",
    "validation_judges",
    "JudgeUnavailable",
]
