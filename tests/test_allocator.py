"""The command line keeps freed memory (glibc malloc settings), and only when asked to.

Each check runs in a child process: the settings are process-wide, and the test process
keeps glibc's defaults.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from beyond_attention.allocator import MALLOC_ENV

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's",
)

# Resident memory (MiB) after a 256 MiB block is written and freed, with or without the
# settings; printed with whether they were applied.
_CHILD = """
import os, sys
from beyond_attention.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
import numpy as np
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = rss_mib()
block = np.ones(2**25)  # 256 MiB, every page touched
del block
print(applied, round(rss_mib() - before))
"""


def _child(mode: str, **env: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True,
        env={**os.environ, **env},
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc_only
def test_kept_memory_stays_resident_after_a_large_block_is_freed():
    applied, kept = _child("tuned")
    assert applied
    assert kept >= 200  # the freed 256 MiB stays in the heap for the next step
    applied, returned = _child("default")
    assert not applied
    assert returned < 50  # glibc's default: the block was an mmap, unmapped when freed


@glibc_only
def test_the_environment_opt_out_keeps_the_c_library_defaults():
    applied, kept = _child("tuned", **{MALLOC_ENV: "system"})
    assert not applied
    assert kept < 50


@glibc_only
def test_the_command_line_applies_it_but_a_call_with_arguments_does_not():
    script = (
        "import sys\n"
        "from unittest import mock\n"
        "import beyond_attention.allocator as a\n"
        "from beyond_attention import cli\n"
        "calls = []\n"
        "with mock.patch.object(a, 'keep_freed_memory', lambda: calls.append(1) or True):\n"
        "    sys.argv = ['beyond-attention', 'models', '--help']\n"
        "    try:\n"
        "        cli.main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    n_cli = len(calls)\n"
        "    try:\n"
        "        cli.main(['models', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(n_cli, len(calls))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-2:] == ["1", "1"]
