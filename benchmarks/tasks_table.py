"""Print the markdown tables of benchmarks/segmentation.md and benchmarks/pointclouds.md
from the run folders that benchmarks/run_tasks.sh writes.

    python benchmarks/tasks_table.py OUT   # OUT: run_tasks.sh's output folder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def segmentation(out: Path, prefix: str) -> list[str]:
    lines = [_row(["model", "head mixer", "params (M)", "train img/s", "images seen",
                   "epochs", "mIoU %", "pixel acc %", "mean class acc %", "mIoU % (slide)"]),
             _row(["---"] * 10)]
    mixers = {"": "EA (S=32)", "_sdpa": "SDPA, 8 heads", "_noattn": "none"}
    for suffix, mixer in mixers.items():
        run = out / f"{prefix}-eanet_resnet26_small{suffix}"
        if not (run / "final.json").is_file():
            continue
        f = json.loads((run / "final.json").read_text())
        slide = run / "eval_slide.json"
        s = json.loads(slide.read_text()) if slide.is_file() else {}
        lines.append(_row([f["model"], mixer, _f(f["params"] / 1e6, 3), _f(f["images_per_s"], 1),
                           f["images_seen"], _f(f["epochs_done"]), _f(f["miou"]),
                           _f(f["pixel_accuracy"]), _f(f["mean_class_accuracy"]),
                           _f(s.get("miou"))]))
    return lines


def pointclouds(out: Path, prefix: str) -> list[str]:
    lines = [_row(["model", "params (M)", "train clouds/s", "clouds seen", "epochs", "OA %",
                   "mAcc %"]), _row(["---"] * 7)]
    for m in ("pct", "pct_ea", "spct", "npct"):
        run = out / f"{prefix}-{m}"
        if not (run / "final.json").is_file():
            continue
        f = json.loads((run / "final.json").read_text())
        lines.append(_row([m, _f(f["params"] / 1e6, 3), _f(f["images_per_s"], 2),
                           f["images_seen"], _f(f["epochs_done"]), _f(f["overall_accuracy"]),
                           _f(f["mean_class_accuracy"])]))
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    for title, lines in (("segmentation, 4 min", segmentation(out, "seg")),
                         ("segmentation, 8 min", segmentation(out, "seg8")),
                         ("segmentation, 2 epochs", segmentation(out, "seg2ep")),
                         ("points, 512, 3 min", pointclouds(out, "points")),
                         ("points, 256, 4 min", pointclouds(out, "points256"))):
        print(f"\n{title}\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
