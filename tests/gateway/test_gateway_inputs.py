"""Job submissions the fuzz tests (tests/fuzz) found answered with INTERNAL or hanging: each is now refused with
INVALID_ARGUMENT and a message saying what is wrong with the input, the output or the options."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from modelyard.gateway.engine import Engine, parse_config_text
from modelyard.gateway.jobs import JobStore
from modelyard.gateway.pipelines import PIPELINES
from modelyard.gateway.pipelines.hand3d import Hand3D, Hand3DOptions
from modelyard.gateway.pipelines.tables import read_table
from modelyard.runtime.errors import InvalidInput


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "image.png").write_bytes(b"not needed: planning does not read images")
    return data


@pytest.fixture
def engine(root: Path) -> Engine:
    return Engine(JobStore(root / ".modelyard" / "jobs.sqlite"), dict(PIPELINES), {}, root)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("rows.jsonl", '{"image_path": "a.png"}\n1\n', "rows.jsonl line 2 is int, not a record"),
        ("rows.jsonl", '["a", "list"]\n', "line 1 is list, not a record"),
        ("rows.json", '[{"image_path": "a.png"}, "text"]', "rows.json record 1 is str, not a record"),
        ("rows.json", '{"image_path": ', "cannot read rows.json"),
        ("rows.parquet", "PAR1 not parquet PAR1", "not a readable Parquet table"),
    ],
)
def test_tables_whose_rows_or_bytes_are_wrong_are_refused(root: Path, name: str, text: str, message: str) -> None:
    (root / name).write_text(text)
    with pytest.raises(InvalidInput, match=message):
        read_table(root / name)


@pytest.mark.timeout(20)
def test_a_table_that_is_a_fifo_is_refused_not_read(root: Path) -> None:
    os.mkfifo(root / "questions.csv")
    with pytest.raises(InvalidInput, match="not a regular file"):
        read_table(root / "questions.csv")


@pytest.mark.parametrize("text", ["a: [", "x: '\x01'", "key: value: other"])
def test_config_text_that_is_not_yaml_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="neither KEY=VALUE lines nor valid YAML"):
        parse_config_text(text)


def test_an_image_path_with_a_nul_byte_is_refused(root: Path, engine: Engine) -> None:
    (root / "rows.jsonl").write_text(json.dumps({"image_path": "a\x00b.png", "question": "q"}) + "\n")
    with pytest.raises(InvalidInput, match=re.escape(r"row 0: image path 'a\x00b.png' cannot be resolved")):
        engine.submit("medvqa", "rows.jsonl", "out", {"MODE": "gold"})


@pytest.mark.parametrize(("output", "message"), [("image.png", "cannot be a folder"), ("image.png/out", "is a file")])
def test_an_output_folder_where_a_file_is_is_refused(root: Path, engine: Engine, output: str, message: str) -> None:
    (root / "rows.jsonl").write_text(json.dumps({"image_path": "image.png", "question": "q"}) + "\n")
    with pytest.raises(InvalidInput, match=message):
        engine.submit("medvqa", "rows.jsonl", output, {"MODE": "gold"})


def test_a_hand3d_folder_takes_only_its_regular_npz_files_inside_the_root(root: Path, tmp_path: Path) -> None:
    clips = root / "clips"
    clips.mkdir()
    np.savez(clips / "a.npz", video=np.zeros((1, 2, 2, 3), np.uint8))
    (clips / "folder.npz").mkdir()
    os.mkfifo(clips / "fifo.npz")  # processing it would block a job worker forever
    (clips / "inside.npz").symlink_to(clips / "a.npz")
    items = Hand3D().plan(clips, Hand3DOptions(), root)
    assert [i.payload["path"] for i in items] == ["clips/a.npz", "clips/a.npz"]
    np.savez(tmp_path / "secret.npz", video=np.zeros((1, 2, 2, 3), np.uint8))
    (clips / "outside.npz").symlink_to(tmp_path / "secret.npz")
    with pytest.raises(InvalidInput, match="escapes the data volume"):
        Hand3D().plan(clips, Hand3DOptions(), root)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('image_path,question\na.png,q\nb.png,"never closed\nc.png,q\n', "rows.csv line 3: malformed CSV: a quote"),
        ("image_path,question\na.png,q\nb.png,q,extra\n", "rows.csv line 3: 3 fields, but the header has 2"),
        ('image_path,question\na.png,"two\nlines"\nb.png,q"x,y\n', "rows.csv line 4: 3 fields"),
    ],
)
def test_a_malformed_csv_is_refused_with_the_line_its_bad_row_starts_on(root: Path, text: str, message: str) -> None:
    (root / "rows.csv").write_text(text)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        read_table(root / "rows.csv")


def test_a_csv_row_may_span_lines_in_quotes_and_short_rows_leave_columns_empty(root: Path) -> None:
    (root / "rows.csv").write_text('\ufeffimage_path,question\na.png,"two\nlines"\n\nb.png\n')
    assert read_table(root / "rows.csv") == [
        {"image_path": "a.png", "question": "two\nlines"},
        {"image_path": "b.png", "question": None},
    ]


@pytest.mark.parametrize("output", [".", "./", "sub/..", ".modelyard", ".modelyard/out"])
def test_the_data_root_and_the_gateways_own_folder_are_refused_as_outputs(
    root: Path, engine: Engine, output: str
) -> None:
    (root / "rows.jsonl").write_text(json.dumps({"image_path": "image.png", "question": "q"}) + "\n")
    with pytest.raises(InvalidInput, match=r"data root itself|without '\.\.'|gateway's own folder"):
        engine.submit("medvqa", "rows.jsonl", output, {"MODE": "gold"})
    assert engine.store.list_jobs() == []
