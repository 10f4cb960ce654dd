"""Token mixers and the blocks they are built from.

Token mixers take and return (B, N, C); 2-D blocks take and return (B, C, H, W).
"""

from .carried import CarriesAttention, carries_attention, run_carried
from .drop_path import DropPath, drop_path
from .external_attention import (
    ExternalAttention,
    ExternalAttentionBlock2d,
    MultiHeadExternalAttention,
)
from .factory import MIXER_NAMES, LambdaTokenMixer, LessAttentionMixer, create_mixer
from .lambda_layer import LambdaLayer, relative_position_lambdas
from .less_attention import AttentionDownsample, LessAttention, VanillaAttention, diagonality_loss
from .mlp import Mlp
from .norms import BatchNorm2d, contiguous_grad
from .self_attention import SelfAttention
from .token_mlp import FeedForwardMixer, TokenMixingMLP

__all__ = [
    "MIXER_NAMES",
    "AttentionDownsample",
    "BatchNorm2d",
    "CarriesAttention",
    "DropPath",
    "ExternalAttention",
    "ExternalAttentionBlock2d",
    "FeedForwardMixer",
    "LambdaLayer",
    "LambdaTokenMixer",
    "LessAttention",
    "LessAttentionMixer",
    "Mlp",
    "MultiHeadExternalAttention",
    "SelfAttention",
    "TokenMixingMLP",
    "VanillaAttention",
    "carries_attention",
    "contiguous_grad",
    "create_mixer",
    "diagonality_loss",
    "drop_path",
    "relative_position_lambdas",
    "run_carried",
]
