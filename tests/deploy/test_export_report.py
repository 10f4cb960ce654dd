"""The export report keeps the text around its tables, resumes, and survives slow models."""

from __future__ import annotations

import beyond_attention.export.report as report


def _fake_rows(calls):
    def child_row(name, compile_mode, timeout, headers):
        calls.append(name)
        return [name] + [f"{name}-{i}" for i in range(len(headers) - 1)]
    return child_row


def test_rows_are_written_after_each_model_and_a_rerun_resumes(tmp_path, monkeypatch):
    out = tmp_path / "export.md"
    out.write_text("# Title\n\nprose before\n")
    calls: list[str] = []
    monkeypatch.setattr(report, "_child_row", _fake_rows(calls))
    assert report.main(["resnet26_cifar", "vit_tiny_cifar", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Title\n\nprose before\n")
    begin, end = report._markers("export")
    assert text.count(begin) == 1 and text.count(end) == 1
    rows = report._read_rows(text, "export", len(report.EXPORT_HEADERS))
    assert sorted(rows) == ["resnet26_cifar", "vit_tiny_cifar"]
    assert rows["vit_tiny_cifar"][1] == "vit_tiny_cifar-0"

    out.write_text(text + "\nprose after\n")  # text after the table is kept too
    assert report.main(["resnet26_cifar", "eamlp_cifar", "--out", str(out)]) == 0
    assert calls == ["resnet26_cifar", "vit_tiny_cifar", "eamlp_cifar"]  # resumed
    text = out.read_text()
    assert text.endswith("\nprose after\n")
    assert len(report._read_rows(text, "export", len(report.EXPORT_HEADERS))) == 3
    assert report.main(["resnet26_cifar", "--out", str(out), "--redo"]) == 0
    assert calls[-1] == "resnet26_cifar"

    # the compile table sits beside the export table without touching it
    assert report.main(["--compile", "resnet26_cifar", "--out", str(out)]) == 0
    text = out.read_text()
    assert len(report._read_rows(text, "export", len(report.EXPORT_HEADERS))) == 3
    assert list(report._read_rows(text, "compile", len(report.COMPILE_HEADERS))) == [
        "resnet26_cifar"]


def test_a_model_over_the_time_limit_gets_a_row_saying_so():
    row = report._child_row("resnet26_cifar", False, 0.5, report.EXPORT_HEADERS)
    assert len(row) == len(report.EXPORT_HEADERS) and row[0] == "resnet26_cifar"
    assert row[-1] == "not run: over the 0.5 s limit"


def test_a_rerun_tries_again_the_rows_that_ran_over_or_failed(tmp_path, monkeypatch):
    out = tmp_path / "export.md"
    blank = [""] * (len(report.EXPORT_HEADERS) - 2)
    table = report.format_table(report.EXPORT_HEADERS, [
        ["resnet26_cifar", *blank, "not run: over the 240 s limit"],
        ["vit_tiny_cifar", *blank, "failed: RuntimeError"],
        ["eamlp_cifar", *["x"] * (len(report.EXPORT_HEADERS) - 1)]], markdown=True)
    out.write_text(report._splice("", "export", table))
    calls: list[str] = []
    monkeypatch.setattr(report, "_child_row", _fake_rows(calls))
    assert report.main(["resnet26_cifar", "vit_tiny_cifar", "eamlp_cifar",
                        "--out", str(out)]) == 0
    assert calls == ["resnet26_cifar", "vit_tiny_cifar"]  # the measured row is kept
    rows = report._read_rows(out.read_text(), "export", len(report.EXPORT_HEADERS))
    assert rows["resnet26_cifar"][-1] == "resnet26_cifar-10" and rows["eamlp_cifar"][1] == "x"
