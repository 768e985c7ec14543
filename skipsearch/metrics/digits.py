"""The demo's domain feature extractor: a small digit classifier, registered with torch-fidelity.

FIDs in this feature space are labelled ``skipsearch-digits`` and are never comparable with Inception FIDs.
"""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn
from torch.nn import functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

DIGITS_EXTRACTOR = "skipsearch-digits"
DIGITS_FEATURE = "fc128"
DIGITS_WEIGHTS = "digits_classifier.pt"
INPUT_RESOLUTION = 16


class DigitClassifier(nn.Module):
    """Three convs and two linear layers; ``features`` is the 128-d layer before the class head.

    ``feature_scale`` (the RMS of the features over the digits data, set after training) divides the
    extracted features, so KID's cubic polynomial kernel sees values of order one, as with Inception.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("feature_scale", torch.tensor(1.0))
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(64 * 4 * 4, 128)
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.features(x)))


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float grey (B, 1, 16, 16) in [-1, 1]; torch-fidelity hands over 3 channels."""
    x = images.float().mean(dim=1, keepdim=True) / 127.5 - 1.0
    if x.shape[-1] != INPUT_RESOLUTION or x.shape[-2] != INPUT_RESOLUTION:
        x = F.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode="bilinear", align_corners=False)
    return x


def load_classifier() -> DigitClassifier:
    net = DigitClassifier()
    with resources.as_file(resources.files("skipsearch.weights") / DIGITS_WEIGHTS) as path:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


class DigitsFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity's interface: ``forward(uint8 Bx3xHxW)`` returns a tuple, one tensor per feature."""

    def __init__(self, name: str, features_list: list[str], **kwargs):
        super().__init__(name, features_list)
        self.classifier = load_classifier()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (DIGITS_FEATURE, "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return DIGITS_FEATURE

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, INPUT_RESOLUTION, INPUT_RESOLUTION, dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.classifier.features(to_classifier_input(images))
        out = {DIGITS_FEATURE: raw / self.classifier.feature_scale, "logits": self.classifier.head(F.relu(raw))}
        return tuple(out[name] for name in self.features_list)


def register() -> None:
    """Idempotent: torch-fidelity refuses a second registration under the same name."""
    if DIGITS_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(DIGITS_EXTRACTOR, DigitsFeatureExtractor)
