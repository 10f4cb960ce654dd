"""The ``evaluate`` command's text report (the library function is tested end to end in
test_train_engine.py)."""

from __future__ import annotations

from beyond_attention.commands.evaluate import report


def test_report_has_a_summary_and_one_row_per_class():
    result = {"model": "m", "dataset": "d", "split": "test", "count": 10, "loss": 0.5,
              "top1": 70.0, "top5": 100.0, "per_class": {"cat": 50.0, "dog": None,
                                                        "a long name": 87.5}}
    lines = report(result).splitlines()
    assert lines[0] == "m on d test (10 images): top-1 70.00%  top-5 100.00%  loss 0.5000"
    assert lines[1].split() == ["class", "top-1"]
    rows = [line.split("  ") for line in lines[3:]]
    assert [[c.strip() for c in r if c.strip()] for r in rows] == [
        ["cat", "50.00%"], ["dog", "n/a"], ["a long name", "87.50%"]]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
