"""The recorded benchmark files read back into the result dataclasses and render.

``benchmarks/*.json`` were written by earlier runs; ``--from-json`` must keep reading them.
Each one round-trips through ``from_json``/``to_json`` unchanged and renders to the
tables of the markdown committed beside it (which adds hand-written sections).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beyond_attention.bench.mixers_report import console_table, markdown_report
from beyond_attention.bench.models import ModelsResult
from beyond_attention.bench.models import console_table as models_table
from beyond_attention.bench.models import markdown_report as models_markdown
from beyond_attention.bench.point import PointResult
from beyond_attention.bench.sweep import SweepResult

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
MIXER_FILES = sorted(p.name for p in BENCHMARKS.glob("mixers*.json"))


def _load(name: str) -> dict:
    return json.loads((BENCHMARKS / name).read_text(encoding="utf-8"))


def _table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def _assert_tables_as_committed(rendered: str, committed: str) -> None:
    """Every table row rendered from the JSON is in the committed report (which adds
    hand-written sections around the generated ones)."""
    rows = _table_lines(rendered)
    assert len(rows) > 10
    missing = sorted(set(rows) - set(_table_lines(committed)))
    assert not missing, missing[:3]


def _normal(obj: object) -> object:
    """The value as JSON would store it (tuples become lists)."""
    return json.loads(json.dumps(obj))


def test_the_recorded_files_are_there():
    assert "mixers.json" in MIXER_FILES and (BENCHMARKS / "models.json").is_file()


@pytest.mark.parametrize("name", MIXER_FILES)
def test_recorded_mixer_runs_round_trip(name):
    raw = _load(name)
    result = SweepResult.from_json(raw)
    assert _normal(result.to_json()) == raw
    # the keys on disk keep their order
    assert list(result.to_json()) == list(raw)
    assert all(isinstance(p, PointResult) for p in result.points)
    assert result.settings.dim == raw["settings"]["dim"]
    console_table(result)  # renders (empty for a targets-only run)
    assert "## Targets" in markdown_report(result)


def test_recorded_mixer_report_renders_as_committed():
    result = SweepResult.from_json(_load("mixers.json"))
    plots = sorted(p.name for p in BENCHMARKS.glob("mixers_b*_*.png"))
    committed = (BENCHMARKS / "mixers.md").read_text(encoding="utf-8")
    _assert_tables_as_committed(markdown_report(result, plots), committed)


def test_recorded_model_run_round_trips_and_renders_as_committed():
    raw = _load("models.json")
    result = ModelsResult.from_json(raw)
    assert _normal(result.to_json()) == raw
    assert [list(r.to_json()) for r in result.models] == [list(r) for r in raw["models"]]
    assert result.models[0].model == raw["models"][0]["model"]
    assert models_table(result)
    committed = (BENCHMARKS / "models.md").read_text(encoding="utf-8")
    _assert_tables_as_committed(models_markdown(result), committed)


def test_unknown_keys_survive_and_bad_input_is_named():
    raw = _load("mixers.json")
    raw["points"][0]["future_key"] = 1
    assert SweepResult.from_json(raw).to_json()["points"][0]["future_key"] == 1
    with pytest.raises(ValueError, match="PointResult"):
        PointResult.from_json({"batch": 1})
    with pytest.raises(ValueError, match="JSON object"):
        SweepResult.from_json([])


def _results_table(markdown: str) -> list[str]:
    """The rows of the table under the first ``## Results`` heading."""
    lines = markdown.splitlines()
    start = lines.index("## Results")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append(line)
    return rows


def test_recorded_point_run_round_trips_and_renders_as_committed():
    from beyond_attention.bench.points import PointsResult, memory_growth
    from beyond_attention.bench.points_report import PLOT_NAME
    from beyond_attention.bench.points_report import markdown_report as points_markdown

    raw = _load("points.json")
    result = PointsResult.from_json(raw)
    assert _normal(result.to_json()) == raw
    # the recorded labels are those the rows give
    assert _normal(memory_growth(result.rows)) == raw["growth"]
    rendered = points_markdown(result, PLOT_NAME)
    _assert_tables_as_committed(rendered, (BENCHMARKS / "points.md").read_text(encoding="utf-8"))
    # the cost section of the point-cloud notes carries the same tables and the command
    notes = (BENCHMARKS / "pointclouds.md").read_text(encoding="utf-8")
    assert not sorted(set(_results_table(rendered)) - set(_table_lines(notes)))
    assert result.command in notes and f"]({PLOT_NAME})" in notes


@pytest.mark.parametrize("name, notes", [("pointcloud_models.json", "pointclouds.md"),
                                         ("segmentation_models.json", "segmentation.md")])
def test_recorded_task_model_runs_render_as_committed(name, notes):
    raw = _load(name)
    result = ModelsResult.from_json(raw)
    assert _normal(result.to_json()) == raw
    rows = _results_table(models_markdown(result))
    assert len(rows) >= 5  # header, rule and one row per model
    text = (BENCHMARKS / notes).read_text(encoding="utf-8")
    assert not sorted(set(rows) - set(_table_lines(text)))
    assert result.command in text
