"""Building blocks of UniAS, one module per concept of the paper."""

from .feature_preparation import FeaturePreparation
from .hybrid_decoder import HybridDecoder, ReconstructionHead
from .layers import AttentionLayer, ConvNorm, FeedForwardLayer, GaussianBlur2d, MultiHeadAttention
from .mgg_cnn import MGGCNN
from .neighbour_attention import SpatialChannelBlock, neighbour_mask
from .pixel_decoder import PixelDecoder
from .position_encoding import sine_position_encoding
from .sample_aware_queries import SampleAwareQueries

__all__ = [
    "MGGCNN",
    "AttentionLayer",
    "ConvNorm",
    "FeaturePreparation",
    "FeedForwardLayer",
    "GaussianBlur2d",
    "HybridDecoder",
    "MultiHeadAttention",
    "PixelDecoder",
    "ReconstructionHead",
    "SampleAwareQueries",
    "SpatialChannelBlock",
    "neighbour_mask",
    "sine_position_encoding",
]
