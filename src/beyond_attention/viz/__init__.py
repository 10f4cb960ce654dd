"""See inside the mixers: capture every layer's maps, draw them, measure saturation.

``capture_maps(model)`` collects the maps of one forward pass without changing it
(:mod:`.capture`); :mod:`.plots` draws them over the images; :mod:`.saturation` compares
each layer's attention with the previous layer's. The ``beyond-attention viz`` command
ties them together.
"""

from .capture import FAMILIES, CapturedMap, MapCapture, capture_maps, mixer_layers

__all__ = ["FAMILIES", "CapturedMap", "MapCapture", "capture_maps", "mixer_layers"]
