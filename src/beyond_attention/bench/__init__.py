"""What mixers and models cost: latency, FLOPs, activation memory, throughput.

- :mod:`.timing`: warm-up + repeated timing (median, quartiles), interleaved A/B ratios.
- :mod:`.memory`: bytes saved for backward (saved-tensor hooks), CUDA peak memory.
- :mod:`.counting`: FLOPs, including the FFT-based convolutions of the lambda layer.
- :mod:`.crossover`: where a mixer becomes cheaper than self-attention.
- :mod:`.mixers` / :mod:`.models`: the two benchmarks behind ``beyond-attention bench``.
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
