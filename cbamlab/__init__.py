"""cbamlab: build, train, compare and explain ResNets with CBAM attention (Woo et al., ECCV 2018)."""
__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402

__all__ = ["create_model", "list_models", "__version__"]
