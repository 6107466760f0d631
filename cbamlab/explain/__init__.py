"""Where the models look and whether it matters: Grad-CAM beside CBAM's own attention maps, deletion/insertion
faithfulness against a random order, and the class-specificity of channel attention. Never trains.

For notebooks:
    from cbamlab.explain import gradcam, spatial_maps, explain_run
    cam = gradcam(model, x, target)               # (B, H, W) in [0, 1]
    maps = spatial_maps(model, x)                  # {stage: (B, H, W)} for CBAM models, {} otherwise
    expl = explain_run("runs/demo", n=32, out="runs/demo/explain")
"""
from .channels import Specificity, class_specificity
from .faithfulness import auc, deletion_insertion, random_maps
from .images import ImageSet, from_files, from_split
from .maps import channel_attention, forward_with_maps, gradcam, spatial_maps, stage_modules
from .pipeline import Explanation, ModelResult, explain, explain_model, explain_run, explain_seeds, write_results
from .selection import ExplainedModel, load_model, select_models

__all__ = [
    "gradcam", "spatial_maps", "channel_attention", "forward_with_maps", "stage_modules",
    "deletion_insertion", "auc", "random_maps", "class_specificity", "Specificity",
    "explain_run", "explain_seeds", "explain", "explain_model", "write_results", "Explanation", "ModelResult",
    "ImageSet", "from_split", "from_files", "ExplainedModel", "load_model", "select_models",
]
