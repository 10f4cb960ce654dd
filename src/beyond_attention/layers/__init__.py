"""Token mixers and the blocks they are built from.

Token mixers take and return (B, N, C); 2-D blocks take and return (B, C, H, W).
"""

from .drop_path import DropPath, drop_path
from .external_attention import (
    ExternalAttention,
    ExternalAttentionBlock2d,
    MultiHeadExternalAttention,
)
from .factory import MIXER_NAMES, LambdaTokenMixer, create_mixer
from .mlp import Mlp
from .self_attention import SelfAttention
from .token_mlp import FeedForwardMixer, TokenMixingMLP

__all__ = [
    "MIXER_NAMES",
    "DropPath",
    "ExternalAttention",
    "ExternalAttentionBlock2d",
    "FeedForwardMixer",
    "LambdaTokenMixer",
    "Mlp",
    "MultiHeadExternalAttention",
    "SelfAttention",
    "TokenMixingMLP",
    "create_mixer",
    "drop_path",
]
