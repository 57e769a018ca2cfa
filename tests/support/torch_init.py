"""Weight initialisation for the model-writing scripts, imported inside the torch environment
(``make_torch_models`` puts the repository on its PYTHONPATH); never by the test process."""

from __future__ import annotations

from typing import Any


def randomize_batch_norm(model: Any) -> Any:
    """Non-trivial batch-norm statistics and affine parameters, so that folding them into the
    convolutions is really tested (fresh ones are the identity). Draws from torch's global RNG."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    return model
