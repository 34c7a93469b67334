"""Published weight files (issue 26): `tsrx ckpt inspect` names the published file, verified by
its published checksum where one exists and by its key layout where none does; the docs list
every registered file and no checksum that is not registered (none is invented)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tsrx.cli.main import app
from tsrx.published import published_files

REPO = Path(__file__).resolve().parents[1]


def inspect(path: Path):
    return CliRunner().invoke(app, ["ckpt", "inspect", str(path)])


def english_g2() -> Path:
    pytest.importorskip("easyocr_en_models")
    from tsrx_builtin.easyocr import default_weights_path

    return default_weights_path()


def test_the_published_easyocr_file_is_verified_by_its_checksum():
    out = inspect(english_g2())
    assert out.exit_code == 0, out.output
    assert (
        "published file EasyOCR english_g2.pth, checksum verified (MD5 "
        "5864788e1821be9e454ec108d61b887d" in " ".join(out.output.split())
    )


def test_a_damaged_file_under_the_published_name_is_named(tmp_path):
    damaged = tmp_path / "english_g2.pth"
    shutil.copy(english_g2(), damaged)
    with open(damaged, "r+b") as f:  # a byte inside the zip's stored tensor data
        f.seek(10_000_000)
        byte = f.read(1)
        f.seek(10_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = inspect(damaged)
    assert out.exit_code != 0
    text = " ".join(str(out.exception).split()) + " ".join(out.output.split())
    assert "named like the published EasyOCR english_g2.pth, but its MD5 is" in text
    assert "not the published 5864788e1821be9e454ec108d61b887d" in text


def test_a_file_without_published_checksum_is_identified_by_its_layout(tmp_path):
    from tsrx.registry import RECOGNIZERS

    crnn = RECOGNIZERS.build({"type": "crnn"}, "model.recognizer")
    torch.save(crnn.state_dict(), tmp_path / "crnn.pth")  # meijieru's keys and shapes
    out = inspect(tmp_path / "crnn.pth")
    assert out.exit_code == 0, out.output
    assert (
        "key layout of the published meijieru/crnn.pytorch crnn.pth; no checksum is "
        "published for it" in " ".join(out.output.split())
    )


def test_docs_list_every_published_file_and_no_invented_checksum():
    text = (REPO / "docs" / "models.md").read_text()
    section = text.split("## Published weights", 1)[1].split("\n## ", 1)[0]
    files = published_files()
    assert len(files) == 8
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(files)
    for p in files:
        assert p.filename in section or p.layout.split(":")[-1] in section, p.title
    registered = {p.md5 for p in files if p.md5}
    assert set(re.findall(r"\b[0-9a-f]{32}\b", section)) == registered
    assert sum("none published" in row for row in rows) == len(files) - len(registered)
