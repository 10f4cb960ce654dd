"""The point-mixer benchmark: rows, skipping, and activation memory's growth in N."""

from __future__ import annotations

import pytest

from beyond_attention.bench.points import bench_point_mixers, format_point_mixers


def test_activation_memory_is_linear_for_ea_and_quadratic_for_offset_attention() -> None:
    rows = bench_point_mixers(points=(256, 512), mixers=("external", "offset"), channels=16,
                              repeats=1, max_seconds=None)
    mem = {(r["mixer"], r["points"]): r["activation_bytes"] for r in rows}
    ea = mem["external", 512] / mem["external", 256]
    oa = mem["offset", 512] / mem["offset", 256]
    assert ea == pytest.approx(2.0, rel=0.05)
    assert oa > 3.0  # the N x N maps dominate: 4x in the limit
    # offset-attention keeps one N x N float32 map (A; the double normalisation's backward
    # needs nothing else of that size), EA nothing of that size
    assert 512 * 512 * 4 <= mem["offset", 512] < 2 * 512 * 512 * 4
    assert mem["external", 512] < 512 * 512 * 4 / 2
    assert all(r["forward_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in rows)
    table = format_point_mixers(rows)
    assert "external" in table and "offset" in table and "fwd+bwd ms" in table


def test_over_budget_skips_that_mixer_from_there_on() -> None:
    rows = bench_point_mixers(points=(64, 128), mixers=("sdpa",), channels=8, repeats=1,
                              max_seconds=1e-9)
    assert [r["points"] for r in rows] == [64, 128]
    assert all("over the time budget at N=64" in r["skipped"] for r in rows)
    assert "skipped" in format_point_mixers(rows, markdown=True)
    with pytest.raises(ValueError, match="mixer must be one of"):
        bench_point_mixers(points=(64,), mixers=("lambda",))
