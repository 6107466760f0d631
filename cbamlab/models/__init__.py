"""Models: CBAM and SE attention, the ResNet family, the registry, weights loading, parameter and MAC counts."""
from ._registry import ModelInfo, create_model, list_models, model_info, register_model
from .attention import CBAM, SE, ChannelGate, SpatialGate, get_attn, list_attn
from .options import AttnOptions
from .profile import count_macs, count_params, stage_table
from .resnet import BasicBlock, Bottleneck, ResNet  # importing registers the models
from .weights import LoadReport, load_backbone

__all__ = [
    "create_model", "list_models", "model_info", "register_model", "ModelInfo",
    "ChannelGate", "SpatialGate", "CBAM", "SE", "get_attn", "list_attn", "AttnOptions",
    "ResNet", "BasicBlock", "Bottleneck",
    "count_params", "count_macs", "stage_table", "load_backbone", "LoadReport",
]
