"""``[model]`` of a resolved config -> a :class:`JointModel`, initial weights loaded in one shot.

Parts come from the registries (SR_BACKBONES, RECOGNIZERS, HEADS); a head gets its
``in_features`` and ``num_classes`` from the recognizer. ``model.init`` maps ``whole``, ``sr``,
``recognizer`` or ``head`` to a checkpoint (tsrx, TextZoom, meijieru CRNN or a bare
state_dict); all of them are merged into one state_dict (``whole`` first, then the parts,
which win) and loaded into the whole model at once with strict=False and a printed report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError
from tsrx.models.joint import JointModel

INIT_KEYS = ("whole", "sr", "recognizer", "head")


def _channels_check(sr: Any, data: dict[str, Any], where: str) -> None:
    if sr is None or "mask" not in data:
        return
    expected = 4 if data["mask"] else 3
    got = getattr(sr, "in_channels", None)
    if got is not None and got != expected:
        raise TsrxError(
            f"{where}model.sr: the SR backbone takes {got}-channel images but data.mask = "
            f"{str(bool(data['mask'])).lower()} gives {expected}-channel images; set "
            f"model.sr.mask = {str(bool(data['mask'])).lower()} or data.mask = "
            f"{str(got == 4).lower()}"
        )


def build_parts(
    model_cfg: dict[str, Any], file: str = "<config>", data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``sr``, ``recognizer``, ``head`` and ``prior`` modules of ``[model]`` (None where
    absent).

    Each part is checked against its contract (``tsrx.contracts``) as its registry builds it,
    with the image sizes and channels of ``data`` (the ``[data]`` table; TextZoom's when None).
    """
    from tsrx.data.config import data_section
    from tsrx.registry import HEADS, RECOGNIZERS, SR_BACKBONES

    data = data or {}
    sizes = data_section({"data": data})
    lr_size, hr_size = tuple(sizes.lr_size), tuple(sizes.hr_size)
    channels = 4 if data.get("mask") else 3
    sr = rec = head = prior = None
    if model_cfg.get("prior"):  # the generator reads the LR image
        prior = RECOGNIZERS.build(
            model_cfg["prior"],
            "model.prior",
            file,
            contract_args={"channels": channels, "size": lr_size},
        )
    if model_cfg.get("sr"):
        # a text-prior backbone reads priors of as many classes as the generator gives
        # (CRNN 37, easyocr 97 or 71 merged): passed to a backbone that takes prior_classes
        context = {"prior_classes": prior.num_classes} if prior is not None else {}
        sr = SR_BACKBONES.build(
            model_cfg["sr"],
            "model.sr",
            file,
            contract_args={"lr_size": lr_size, "hr_size": hr_size},
            **context,
        )
    if model_cfg.get("recognizer"):
        rec = RECOGNIZERS.build(
            model_cfg["recognizer"],
            "model.recognizer",
            file,
            contract_args={"channels": channels, "size": hr_size},
        )
    if model_cfg.get("head"):
        if rec is None:
            raise TsrxError(
                f"{file}: model.head: a head replaces a recognizer's classifier, "
                "so it needs [model.recognizer]"
            )
        if not getattr(rec, "ctc", True):
            raise TsrxError(
                f"{file}: model.head: {model_cfg['recognizer'].get('type')} is an "
                "attention recognizer (ctc = false); heads replace a CTC "
                "recognizer's classifier (crnn). Remove [model.head]"
            )
        head = HEADS.build(
            model_cfg["head"],
            "model.head",
            file,
            in_features=rec.feature_dim,
            num_classes=rec.num_classes,
        )
    return {"sr": sr, "recognizer": rec, "head": head, "prior": prior}


def load_prior_weights(
    model: JointModel, path: str | Path, base_dir: str | Path = "."
) -> list[str]:
    """Load the text-prior generator (``prior.*``) from a recognizer checkpoint (meijieru
    crnn.pth, a tsrx checkpoint's ``recognizer.*`` or a bare state_dict), then copy it into
    ``prior_teacher``. Returns the keys it set."""
    from tsrx.checkpoint import load_checkpoint, load_into, state_dict_for

    path = Path(path)
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise TsrxError(
            f"model.prior_weights = {str(path)!r}: no such file ({path.absolute()}). It is the "
            "text-prior generator's checkpoint: meijieru's pretrained crnn.pth (source: "
            "docs/models.md, 'Published weights'; put it at that path), or your own stage-2 "
            "recognizer (--set model.prior_weights=runs/rec_finetune/main/best_acc_model.pth)"
        )
    try:
        recognizer = state_dict_for(load_checkpoint(path), "recognizer")
    except TsrxError as exc:
        raise TsrxError(f"model.prior_weights: {exc}") from exc
    state = {
        "prior." + k[len("recognizer.") :]: v
        for k, v in recognizer.items()
        if k.startswith("recognizer.")
    }
    report = load_into(model, state, source=str(path))
    missing = [k for k in report.missing if k.startswith("prior.")]
    if missing or not state:
        raise TsrxError(
            f"model.prior_weights {path}: {len(missing)} generator weight(s) missing "
            f"(first: {missing[0] if missing else 'all'}); is it a "
            f"{type(model.prior).__name__} checkpoint?"
        )
    model.sync_teacher()
    return [k for k in model.state_dict() if k.startswith(("prior.", "prior_teacher."))]


def init_state_dict(
    init: dict[str, str], base_dir: str | Path = "."
) -> tuple[dict[str, Any], list[str]]:
    """Merge the checkpoints of ``model.init`` into one state_dict in the joint key space.

    Returns the state_dict and notes (e.g. loss-combiner weights left to the trainer).
    """
    from tsrx.checkpoint import load_checkpoint, state_dict_for

    unknown = [k for k in init if k not in INIT_KEYS]
    if unknown:
        raise TsrxError(
            f"model.init: unknown part(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(INIT_KEYS)}"
        )
    merged: dict[str, Any] = {}
    notes: list[str] = []
    for part in INIT_KEYS:
        if part not in init:
            continue
        path = Path(init[part])
        if not path.is_absolute():
            path = Path(base_dir) / path
        try:
            state = state_dict_for(load_checkpoint(path), part)
        except TsrxError as exc:
            raise TsrxError(f"model.init.{part}: {exc}") from exc
        combiner = [k for k in state if k.startswith("combiner.")]
        if combiner:
            notes.append(
                f"model.init.{part}: {len(combiner)} loss-combiner tensor(s) in {path} "
                "are not model weights and were left out"
            )
        merged.update((k, v) for k, v in state.items() if not k.startswith("combiner."))
    return merged, notes


def build_model(
    config: dict[str, Any], load_init: bool = True, console: Any = None, file: str = "<config>"
) -> JointModel:
    """The joint model of a resolved config; ``model.init`` is loaded when ``load_init``.

    The load report is printed to ``console`` (a rich Console; stdout when None) and kept
    as ``model.load_report`` (None when nothing was loaded).
    """
    from tsrx.models.config import model_section

    model_cfg = config.get("model") or {}
    sec = model_section(config)
    data = config.get("data") or {}
    parts = build_parts(model_cfg, file, data)
    _channels_check(parts["sr"], data, "" if file == "<config>" else f"{file}: ")
    model = JointModel(
        parts["sr"],
        parts["recognizer"],
        parts["head"],
        coupling=sec.coupling,
        feature_layer=sec.feature_layer,
        freeze=sec.freeze,
        rec_input=sec.rec_input,
        prior=parts["prior"],
        prior_stages=sec.prior_stages,
        prior_dropout=sec.prior_dropout,
        prior_detach=sec.prior_detach,
        rotate_train=sec.rotate_train,
    )
    model.load_report = None
    init = sec.init
    if load_init and model.prior is not None and sec.prior_weights:
        load_prior_weights(model, sec.prior_weights)
    if load_init and init:
        from tsrx.checkpoint import load_into

        state, notes = init_state_dict(init)
        sources = ", ".join(f"{k}={v}" for k, v in init.items())
        report = load_into(
            model,
            state,
            allow_shape_mismatch=sec.allow_shape_mismatch,
            source=sources,
        )
        if console is None:
            from rich.console import Console

            console = Console()
        report.print(console)
        for note in notes:
            console.print(note, highlight=False, markup=False)
        model.load_report = report
        if (
            model.prior_teacher is not None
            and not sec.prior_weights
            and not any(k.startswith("prior_teacher.") for k in state)
        ):
            model.sync_teacher()  # the teacher starts from the generator's initial weights
    return model
