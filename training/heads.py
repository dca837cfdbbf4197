"""The head every method trains on backbone features: a small MLP, optionally with a binary code layer.

Exported as plain arrays (batch norm folded into the first layer) so serving runs it in numpy
(`vision.trained.apply_head`), without torch.
"""

from __future__ import annotations

import numpy as np


def build_head(in_dim: int, out_dim: int = 128, hidden: int = 1024, dropout: float = 0.2, bits: int | None = None):
    """An MLP head: Linear -> BatchNorm -> ReLU -> Dropout -> Linear (-> a `bits`-wide code layer)."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(in_dim, hidden)
            self.bn = torch.nn.BatchNorm1d(hidden)
            self.drop = torch.nn.Dropout(dropout)
            self.fc2 = torch.nn.Linear(hidden, out_dim)
            self.code = torch.nn.Linear(out_dim, bits) if bits else None

        def forward(self, x):
            """The embedding (not normalised; losses and serving normalise it)."""
            return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))

        def code_logits(self, embedding):
            """Pre-sign code activations of a normalised embedding (tanh of them approaches +-1)."""
            return self.code(embedding)

    return Head()


def export_head(head) -> dict[str, np.ndarray]:
    """The head as arrays w1 b1 w2 b2 (+ w3 b3), batch norm folded into w1, b1 (eval-mode statistics)."""
    import torch

    head = head.eval()
    with torch.no_grad():
        bn = head.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w1 = (head.fc1.weight * scale[:, None]).T
        b1 = (head.fc1.bias - bn.running_mean) * scale + bn.bias
        out = {
            "w1": w1,
            "b1": b1,
            "w2": head.fc2.weight.T,
            "b2": head.fc2.bias,
        }
        if head.code is not None:
            out["w3"], out["b3"] = head.code.weight.T, head.code.bias
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items()}
