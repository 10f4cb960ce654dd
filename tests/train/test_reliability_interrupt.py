"""Ctrl-C during training: a real SIGINT to a training process saves a checkpoint at the
current step, prints the command that resumes, exits 130; the resume reaches the weights
of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import tiny_model
import torch
from safetensors.torch import load_file

from beyond_attention.commands.train import resume_command

SCRIPT = str(Path(tiny_model.__file__).resolve())


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tiny_model.REPO / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _common(data) -> list[str]:
    return ["train", "--model", tiny_model.NAME, "--data", str(data), "--epochs", "2",
            "--batch-size", "32", "--limit-train", "192", "--limit-val", "64",
            "--save-every", "100", "--seed", "5", "--ema", "0.9", "--mixup", "0.2",
            "--workers", "0", "--device", "cpu", "--log-every", "1"]


def test_sigint_saves_a_resumable_checkpoint(fashion_dir, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run([sys.executable, SCRIPT, *_common(fashion_dir), "--quiet", "--out",
                    str(full)], cwd=tmp_path, env=_env(), check=True, capture_output=True,
                   timeout=300)
    # 6 steps per epoch; interrupt once the second step's progress line is out
    proc = subprocess.Popen([sys.executable, SCRIPT, "--sleep-per-step", "0.3",
                             *_common(fashion_dir), "--out", str(cut)], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if "step 2/6" in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(lines)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, "".join(lines) + out + err
    assert not (cut / "final.json").exists()
    record = json.loads((cut / "last.json").read_text())
    step = record["state"]["global_step"]
    assert 2 <= step < 12, step  # the step the signal arrived in, not a scheduled one
    assert step % 100  # save-every 100: this checkpoint was written for the interrupt
    resume_line = [ln for ln in err.splitlines() if "resume with:" in ln]
    assert len(resume_line) == 1 and f"interrupted after step {step}" in resume_line[0]
    command = shlex.split(resume_line[0].split("resume with: ", 1)[1])
    assert command[-3:] == ["--out", str(cut), "--resume"]
    assert "--sleep-per-step" not in command
    # run the printed command (its program is this test's script)
    assert command[:2] == ["python", SCRIPT]
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"(global step {step})" in resumed.stdout
    for name in ("last.safetensors", "last.state.safetensors", "best.safetensors"):
        a, b = load_file(full / name), load_file(cut / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_resume_command_replaces_out_and_resume():
    argv = ["train", "--model", "m", "--out", "old", "--resume", "old/last.json", "--lr",
            "0.1", "--overwrite"]
    assert resume_command(argv, "runs/x", prog="beyond-attention") == \
        "beyond-attention train --model m --lr 0.1 --out runs/x --resume"
    assert resume_command(["train", "--resume", "--epochs", "2", "--out=a b"], "a b",
                          prog="python -m beyond_attention") == \
        "python -m beyond_attention train --epochs 2 --out 'a b' --resume"
