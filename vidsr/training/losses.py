"""The losses of Real-ESRGAN's training recipe (``options/train_realesrgan_x4plus.yml``):
L1 on pixels, a VGG19 perceptual loss and a vanilla GAN loss - BasicSR's ``L1Loss``,
``PerceptualLoss`` and ``GANLoss`` with the settings Real-ESRGAN trains with.

Tensor contract for every loss here: (N, 3, H, W) float tensors in [0, 1] (the generator's
output and the ground truth), on the device and in the dtype of the loss module; each loss
returns a 0-dim tensor. The VGG19 weights come from :mod:`vidsr.training.weights`; this module
never downloads anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: torchvision's VGG19 configuration "E": output channels of each 3x3 conv, ``M`` a 2x2 max pool.
VGG19_CONFIG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip


def _layer_names(config: Sequence[int | str]) -> tuple[str, ...]:
    """BasicSR's ``NAMES['vgg19']``: ``convB_I``, ``reluB_I`` per conv and ``poolB`` per pool,
    B the block (1-based) and I the conv within it; position N is torchvision's ``features.N``."""
    names: list[str] = []
    block, conv = 1, 0
    for item in config:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return tuple(names)


#: The name of every module of torchvision's ``vgg19().features``, in order (37 of them).
VGG19_NAMES = _layer_names(VGG19_CONFIG)

#: Real-ESRGAN's perceptual layer weights; the features are taken before the ReLU.
REALESRGAN_LAYER_WEIGHTS: Mapping[str, float] = {
    "conv1_2": 0.1,
    "conv2_2": 0.1,
    "conv3_4": 1.0,
    "conv4_4": 1.0,
    "conv5_4": 1.0,
}

#: ImageNet statistics of inputs in [0, 1] (BasicSR ``use_input_norm=True``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The Real-ESRGAN generator's GAN loss weight (the discriminator's is always 1).
GAN_LOSS_WEIGHT = 0.1


def _modules(config: Sequence[int | str]) -> Iterator[nn.Module]:
    channels = 3
    for item in config:
        if item == "M":
            yield nn.MaxPool2d(kernel_size=2, stride=2)
        else:
            assert isinstance(item, int)
            yield nn.Conv2d(channels, item, kernel_size=3, padding=1)
            yield nn.ReLU(inplace=False)  # not in place: a conv's output is a feature
            channels = item


def vgg19_feature_shapes() -> dict[str, tuple[int, ...]]:
    """``{"features.N.weight" | "features.N.bias": shape}`` of torchvision's VGG19 convs (16
    convs, 32 tensors, 20,024,384 parameters); the classifier is not part of it."""
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels = 0, 3
    for item in VGG19_CONFIG:
        if item == "M":
            index += 1
            continue
        assert isinstance(item, int)
        shapes[f"features.{index}.weight"] = (item, channels, 3, 3)
        shapes[f"features.{index}.bias"] = (item,)
        index, channels = index + 2, item
    return shapes


class VGG19Features(nn.Module):
    """VGG19's convolutional stack returning the named layers' outputs (BasicSR's
    ``VGGFeatureExtractor`` for ``vgg19``, ``use_input_norm=True``, ``range_norm=False``).

    Parameters keep torchvision's names (``features.N.weight``/``bias``), so the conv part of
    torchvision's ImageNet state dict loads strictly (:meth:`load_vgg19`). The stack stops
    after the last requested layer, as BasicSR truncates it. Always frozen and in eval mode.

    forward: (N, 3, H, W) in [0, 1] -> ``{name: feature}`` in network order; a ``convB_I``
    feature is the conv's output before its ReLU (``reluB_I`` is after it).
    """

    def __init__(
        self,
        *,
        layers: Sequence[str] = tuple(REALESRGAN_LAYER_WEIGHTS),
        use_input_norm: bool = True,
    ):
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_NAMES]
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {list(VGG19_NAMES)}")
        last = max(VGG19_NAMES.index(name) for name in layers)
        self.layers = tuple(sorted(set(layers), key=VGG19_NAMES.index))
        self.names = VGG19_NAMES[: last + 1]
        modules = list(_modules(VGG19_CONFIG))[: last + 1]
        self.features = nn.Sequential(*modules)
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """Stays in eval mode (a frozen feature extractor); returns ``self``."""
        return super().train(False)

    def load_vgg19(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the conv layers this stack keeps from a torchvision VGG19 state dict (the
        ``classifier.*`` keys and convs past the last requested layer are ignored); strict
        for the rest, so a missing or misshapen conv raises ``RuntimeError``."""
        wanted = self.state_dict().keys()
        self.load_state_dict({k: v for k, v in state_dict.items() if k in wanted}, strict=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.names, self.features, strict=True):
            x = module(x)
            if name in self.layers:
                out[name] = x
        return out


class PerceptualLoss(nn.Module):
    """BasicSR's ``PerceptualLoss`` as Real-ESRGAN configures it: VGG19 features before the
    ReLU, L1 criterion, style weight 0::

        perceptual_weight * sum(w[k] * mean|vgg(x)[k] - vgg(gt)[k]|  for k, w in layer_weights)

    ``vgg_state_dict``: torchvision's VGG19 state dict (:func:`vidsr.training.weights.
    vgg19_state_dict`); None leaves the VGG randomly initialised (tests only). forward(x, gt):
    two (N, 3, H, W) tensors in [0, 1] -> a 0-dim loss; ``gt`` is detached. Unlike BasicSR's
    (perceptual, style) pair it returns the one tensor; with ``perceptual_weight`` 0 it is 0
    and VGG does not run.
    """

    def __init__(
        self,
        vgg_state_dict: Mapping[str, torch.Tensor] | None,
        *,
        layer_weights: Mapping[str, float] = REALESRGAN_LAYER_WEIGHTS,
        perceptual_weight: float = 1.0,
    ):
        super().__init__()
        self.layer_weights = dict(layer_weights)
        self.perceptual_weight = float(perceptual_weight)
        self.vgg = VGG19Features(layers=tuple(self.layer_weights))
        if vgg_state_dict is not None:
            self.vgg.load_vgg19(vgg_state_dict)

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        if self.perceptual_weight == 0:
            return x.new_zeros(())
        x_features = self.vgg(x)
        with torch.no_grad():  # gt.detach(): the VGG is frozen, so no graph is needed at all
            gt_features = self.vgg(gt.detach())
        loss = x.new_zeros(())
        for name, feature in x_features.items():
            loss = loss + F.l1_loss(feature, gt_features[name]) * self.layer_weights[name]
        return loss * self.perceptual_weight


class GANLoss(nn.Module):
    """BasicSR's ``GANLoss`` with ``gan_type='vanilla'``: binary cross-entropy on the
    discriminator's logits against a target filled with ``real_label`` or ``fake_label``.

    forward(logits, target_is_real, is_disc=False): ``logits`` any shape (UNetDiscriminatorSN
    gives (N, 1, H, W)) -> 0-dim loss, times ``loss_weight`` for the generator (``is_disc``
    False) and unweighted for the discriminator.
    """

    def __init__(
        self,
        *,
        loss_weight: float = GAN_LOSS_WEIGHT,
        real_label: float = 1.0,
        fake_label: float = 0.0,
    ):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def forward(
        self, logits: torch.Tensor, target_is_real: bool, *, is_disc: bool = False
    ) -> torch.Tensor:
        target = torch.full_like(logits, self.real_label if target_is_real else self.fake_label)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss if is_disc else loss * self.loss_weight


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (BasicSR's ``L1Loss``, weight 1, ``reduction='mean'``)."""
    return F.l1_loss(pred, target, reduction="mean")
