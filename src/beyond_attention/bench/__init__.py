"""What mixers and models cost: latency, FLOPs, activation memory, throughput.

- :mod:`.timing`: warm-up + repeated timing (median, quartiles), interleaved A/B ratios.
- :mod:`.memory`: bytes saved for backward (saved-tensor hooks), CUDA peak memory.
- :mod:`.counting`: FLOPs, including the FFT-based convolutions of the lambda layer.
- :mod:`.crossover`: where a mixer becomes cheaper than self-attention.
- :mod:`.settings`: what a run is made of; the ``bench`` flags and the reproduction command
  are derived from its dataclass fields.
- the mixer benchmark, one job per module: :mod:`.contenders` (mixers, baselines, peers,
  LaViT adapters), :mod:`.point` (one measurement), :mod:`.targets` (acceptance targets),
  :mod:`.compile_study`, :mod:`.sweep` (the run), :mod:`.mixers_report` (its report);
  :mod:`.mixers` gathers them under one name.
- :mod:`.models`: the model benchmark and its report.
- :mod:`.points`: point-cloud attention (EA, offset-attention, SDPA) over the number of
  points; :mod:`.points_report` its report and plot.
- :mod:`.train_step`: the training step phase by phase (``bench train-step``), beside the
  peer plain ViT of :mod:`.peer_vit`.
- :mod:`.records`: the results as dataclasses reading and writing the recorded JSON.
"""

from .counting import forward_flops
from .crossover import Crossover, crossover_from_costs, crossover_from_ratios
from .memory import SavedTensors, activation_bytes, cuda_peak_bytes, saved_tensor_bytes
from .timing import (
    BudgetExceeded,
    Ratio,
    Summary,
    forward_backward_callable,
    forward_callable,
    interleaved_ratio,
    time_callable,
)

__all__ = [
    "BudgetExceeded",
    "Crossover",
    "Ratio",
    "SavedTensors",
    "Summary",
    "activation_bytes",
    "crossover_from_costs",
    "crossover_from_ratios",
    "cuda_peak_bytes",
    "forward_backward_callable",
    "forward_callable",
    "forward_flops",
    "interleaved_ratio",
    "saved_tensor_bytes",
    "time_callable",
]
