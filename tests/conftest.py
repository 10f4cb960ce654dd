"""Test-session settings shared by every test file."""

import torch

# The tests run many tiny operations: one intra-op thread avoids thread hand-off overhead,
# which otherwise dominates them on small machines (and makes them slower, not faster).
torch.set_num_threads(1)
