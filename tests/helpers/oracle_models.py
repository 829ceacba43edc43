"""Models whose splits have an exact, independent oracle.

``affine_cloud`` is cut so that the cloud part is one 1x1 convolution with a
bias and nothing else. For such a cloud, mixing commutes exactly:

    C⁻¹ · cloud(C · h) = C⁻¹ (C h Wᵀ + 1 bᵀ) = h Wᵀ + C⁻¹ 1 bᵀ = h Wᵀ + 1 bᵀ = cloud(h)

where the last step needs C·1 = 1, i.e. every row of C sums to one (Dirichlet
rows do). So tail(C⁻¹ · cloud(C · head(x))) equals model(x) to float
precision for any such C, and any transposed, swapped or mis-grouped
matrix anywhere in the chain breaks the equality. The bias is what makes a
transposed C visible: Cᵀ·1 ≠ 1 for Dirichlet rows. An orthogonal C has no
unit row sums, so its oracle is the same model without the cloud's bias
(``cloud_bias=False``): C⁻¹·(C·h·Wᵀ) = h·Wᵀ for any invertible C.
"""

from __future__ import annotations

from torch import nn

HEAD_CUT, TAIL_CUT = "act", "cloud"


class AffineCloudNet(nn.Module):
    """8x8 digits: conv+ReLU (head) | 1x1 conv with bias (cloud) | ReLU, linear (tail)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, cloud_bias: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.cloud = nn.Conv2d(8, 8, 1, bias=cloud_bias)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.relu(self.cloud(self.act(self.stem(x))))))


def affine_cloud(num_classes: int = 10, in_channels: int = 1, cloud_bias: bool = True) -> nn.Module:
    return AffineCloudNet(num_classes, in_channels, cloud_bias)
