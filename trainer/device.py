"""Where the trainer computes: the CUDA GPU when there is one, the CPU otherwise."""

from __future__ import annotations

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
