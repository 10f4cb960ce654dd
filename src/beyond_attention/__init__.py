"""beyond-attention: attention alternatives for vision, faithful to their papers.

External attention (Guo et al. 2021), LambdaNetworks (Bello 2021) and the Less-Attention
Vision Transformer (Zhang et al. 2024), each beside an honest self-attention baseline.
"""

__version__ = "0.1.0"
