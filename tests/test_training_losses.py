"""The training losses (L1, VGG19 perceptual, vanilla GAN) against BasicSR's math, and the
weights they need: VGG19 and the official discriminators, downloaded from a loopback server.

BasicSR itself cannot be imported here (its package ``__init__`` needs torchvision, which is not
installed). Where an installed copy is found, its ``vgg_arch.py``, ``basic_loss.py`` and
``gan_loss.py`` are loaded by path with their package and torchvision's ``vgg19`` stubbed out;
the other tests compare with a hand-written reference of the same math.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidsr.errors import ModelError, UnsafeModelFileError, spelling
from vidsr.models.arch import RRDBNet, UNetDiscriminatorSN
from vidsr.models.sources import cached_models
from vidsr.training import weights as tw
from vidsr.training.losses import (
    REALESRGAN_LAYER_WEIGHTS,
    VGG19_NAMES,
    GANLoss,
    PerceptualLoss,
    VGG19Features,
    l1_loss,
    vgg19_feature_shapes,
)

UNREACHABLE = "http://127.0.0.1:9/unreachable/"

#: torchvision ``vgg19().features``: the index of each conv and its (out, in) channels.
TORCHVISION_VGG19_CONVS = [
    (0, 64, 3), (2, 64, 64),
    (5, 128, 64), (7, 128, 128),
    (10, 256, 128), (12, 256, 256), (14, 256, 256), (16, 256, 256),
    (19, 512, 256), (21, 512, 512), (23, 512, 512), (25, 512, 512),
    (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512),
]  # fmt: skip

#: torchvision's classifier (kept out of the cache); shapes of the real ImageNet file.
TORCHVISION_VGG19_CLASSIFIER = {
    "classifier.0.weight": (4096, 25088),
    "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096),
    "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}

#: BasicSR's ``NAMES['vgg19']``.
BASICSR_VGG19_NAMES = [
    "conv1_1",
    "relu1_1",
    "conv1_2",
    "relu1_2",
    "pool1",
    "conv2_1",
    "relu2_1",
    "conv2_2",
    "relu2_2",
    "pool2",
    "conv3_1",
    "relu3_1",
    "conv3_2",
    "relu3_2",
    "conv3_3",
    "relu3_3",
    "conv3_4",
    "relu3_4",
    "pool3",
    "conv4_1",
    "relu4_1",
    "conv4_2",
    "relu4_2",
    "conv4_3",
    "relu4_3",
    "conv4_4",
    "relu4_4",
    "pool4",
    "conv5_1",
    "relu5_1",
    "conv5_2",
    "relu5_2",
    "conv5_3",
    "relu5_3",
    "conv5_4",
    "relu5_4",
    "pool5",
]


@pytest.fixture(autouse=True)
def home(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIDSR_VGG_URL", UNREACHABLE + "vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", UNREACHABLE)
    return private_home


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for index, out, inp in TORCHVISION_VGG19_CONVS:
        shapes[f"features.{index}.weight"] = (out, inp, 3, 3)
        shapes[f"features.{index}.bias"] = (out,)
    return shapes


@pytest.fixture(scope="module")
def vgg_sd() -> dict[str, torch.Tensor]:
    """A random state dict with the real VGG19 conv shapes (80 MB, about 0.3 s to make)."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in _expected_shapes().items():
        fan_in = shape[1] * 9 if len(shape) == 4 else 1
        scale = (2.0 / fan_in) ** 0.5 if len(shape) == 4 else 0.05
        sd[key] = torch.randn(shape, generator=g) * scale
    return sd


def _with_classifier(sd: dict[str, torch.Tensor], real_shapes: bool) -> dict[str, torch.Tensor]:
    """``sd`` plus torchvision's classifier keys: real shapes as zero-stride views (no memory,
    for in-memory use) or tiny tensors (for a file)."""
    out = dict(sd)
    for key, shape in TORCHVISION_VGG19_CLASSIFIER.items():
        out[key] = torch.zeros(1).expand(shape) if real_shapes else torch.zeros(2)
    return out


# --- VGG19Features -----------------------------------------------------------------------------


def test_layer_list_gives_torchvision_keys_and_shapes() -> None:
    assert list(VGG19_NAMES) == BASICSR_VGG19_NAMES and len(VGG19_NAMES) == 37
    expected = _expected_shapes()
    assert len(expected) == 32
    assert vgg19_feature_shapes() == expected
    vgg = VGG19Features()  # Real-ESRGAN's layers: up to conv5_4 (features.34)
    got = {k: tuple(v.shape) for k, v in vgg.state_dict().items()}
    assert list(got) == list(expected) and got == expected
    assert len(vgg.features) == 35  # pool5 is past the last requested layer
    assert sum(v.numel() for v in vgg.state_dict().values()) == 20_024_384
    for index, name in enumerate(VGG19_NAMES[:35]):
        module = vgg.features[index]
        kind = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[name[:4]]
        assert isinstance(module, kind), (index, name)


def test_stack_stops_after_the_last_requested_layer() -> None:
    vgg = VGG19Features(layers=("conv2_2", "conv1_2"))
    assert len(vgg.features) == 8  # conv2_2 is features.7
    assert list(vgg.state_dict()) == [
        f"features.{i}.{p}" for i in (0, 2, 5, 7) for p in ("weight", "bias")
    ]
    out = vgg(torch.rand(1, 3, 16, 16))
    assert list(out) == ["conv1_2", "conv2_2"]  # network order
    assert out["conv1_2"].shape == (1, 64, 16, 16) and out["conv2_2"].shape == (1, 128, 8, 8)
    with pytest.raises(ValueError, match="unknown VGG19 layers"):
        VGG19Features(layers=("conv6_1",))


def test_torchvision_state_dict_with_classifier_loads_strictly(
    vgg_sd: dict[str, torch.Tensor],
) -> None:
    full = _with_classifier(vgg_sd, real_shapes=True)
    assert tw.is_vgg19_state_dict(full)
    loss = PerceptualLoss(full)
    got = loss.vgg.state_dict()
    assert got.keys() == vgg_sd.keys()
    assert all(torch.equal(got[k], v) for k, v in vgg_sd.items())
    # strict: a missing conv is refused, and shapes are checked
    missing = {k: v for k, v in full.items() if k != "features.34.bias"}
    with pytest.raises(RuntimeError, match=r"features\.34\.bias"):
        VGG19Features().load_vgg19(missing)
    assert not tw.is_vgg19_state_dict(missing)
    wrong = {**full, "features.2.weight": torch.zeros(64, 32, 3, 3)}
    assert not tw.is_vgg19_state_dict(wrong)
    bn = {**full, "features.1.running_mean": torch.zeros(64)}  # a vgg19_bn layout
    assert not tw.is_vgg19_state_dict(bn)


def test_features_are_taken_before_the_relu() -> None:
    torch.manual_seed(1)
    vgg = VGG19Features(layers=("conv1_2", "relu1_2", "conv2_1"))
    x = torch.rand(2, 3, 12, 12)
    out = vgg(x)
    conv = out["conv1_2"]
    assert (conv < 0).any()  # a ReLU'd feature would have no negatives
    assert torch.equal(out["relu1_2"], F.relu(conv))
    # by hand: ImageNet normalisation, conv1_1, ReLU, conv1_2 (torchvision's features 0..2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    f = vgg.features
    h = F.conv2d((x - mean) / std, f[0].weight, f[0].bias, padding=1)
    h = F.conv2d(F.relu(h), f[2].weight, f[2].bias, padding=1)
    torch.testing.assert_close(conv, h)
    h = F.conv2d(F.max_pool2d(F.relu(h), 2, 2), f[5].weight, f[5].bias, padding=1)
    torch.testing.assert_close(out["conv2_1"], h)


def test_vgg_is_frozen_and_stays_in_eval_but_passes_gradients() -> None:
    loss = PerceptualLoss(None)
    loss.train()
    assert not loss.vgg.training and not any(m.training for m in loss.vgg.modules())
    assert not any(p.requires_grad for p in loss.parameters())
    assert list(loss.state_dict()) == [f"vgg.{k}" for k in _expected_shapes()]  # no mean/std
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(x, torch.rand(1, 3, 16, 16)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- PerceptualLoss, GANLoss, l1_loss ----------------------------------------------------------


def _reference_perceptual(
    vgg: VGG19Features, x: torch.Tensor, gt: torch.Tensor, weights: dict[str, float], pw: float
) -> torch.Tensor:
    """BasicSR's PerceptualLoss.forward with criterion l1 and style weight 0, by hand."""
    xf, gf = vgg(x), vgg(gt.detach())
    total = torch.zeros(())
    for k in xf:
        total = total + (xf[k] - gf[k]).abs().mean() * weights[k]
    return total * pw


def test_perceptual_loss_is_zero_for_itself_and_weights_apply() -> None:
    torch.manual_seed(2)
    loss = PerceptualLoss(None)
    assert loss.layer_weights == {
        "conv1_2": 0.1,
        "conv2_2": 0.1,
        "conv3_4": 1.0,
        "conv4_4": 1.0,
        "conv5_4": 1.0,
    }
    assert loss.perceptual_weight == 1.0
    x, gt = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert loss(x, x).item() == 0.0
    # (each VGG pass reads its 80 MB of weights: the passes are counted)
    with torch.no_grad():
        feats_x, feats_gt = loss.vgg(x), loss.vgg(gt)
    l1 = {k: (feats_x[k] - feats_gt[k]).abs().mean() for k in feats_x}
    value = loss(x, gt)
    assert value.dim() == 0 and value.item() > 0
    torch.testing.assert_close(value, sum(loss.layer_weights[k] * v for k, v in l1.items()))
    # the layer weights are applied: raising conv2_2's by 0.4 adds 0.4 * its L1
    loss.layer_weights["conv2_2"] = 0.5
    torch.testing.assert_close(loss(x, gt) - value, 0.4 * l1["conv2_2"])
    # and the perceptual weight (on a short stack: the same code)
    short = PerceptualLoss(None, layer_weights={"conv1_2": 0.1, "conv2_2": 0.1})
    doubled = PerceptualLoss(
        None, layer_weights={"conv1_2": 0.1, "conv2_2": 0.1}, perceptual_weight=2.0
    )
    doubled.load_state_dict(short.state_dict())
    torch.testing.assert_close(doubled(x, gt), 2 * short(x, gt))
    torch.testing.assert_close(
        short(x, gt), _reference_perceptual(short.vgg, x, gt, short.layer_weights, 1.0)
    )
    off = PerceptualLoss(None, perceptual_weight=0)
    assert off(x, gt).item() == 0.0


def test_gan_loss_is_vanilla_bce_with_generator_weight() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 1, 8, 8)
    gan = GANLoss()
    assert gan.loss_weight == 0.1 and (gan.real_label, gan.fake_label) == (1.0, 0.0)
    real = -F.logsigmoid(logits).mean()  # -log(sigmoid(x)) against target 1
    fake = -F.logsigmoid(-logits).mean()  # -log(1 - sigmoid(x)) against target 0
    torch.testing.assert_close(gan(logits, True, is_disc=True), real)
    torch.testing.assert_close(gan(logits, False, is_disc=True), fake)
    torch.testing.assert_close(gan(logits, True), 0.1 * real)
    torch.testing.assert_close(gan(logits, False), 0.1 * fake)
    smooth = GANLoss(real_label=0.9)
    target = torch.full_like(logits, 0.9)
    by_hand = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).mean()
    torch.testing.assert_close(smooth(logits, True, is_disc=True), by_hand)


def test_l1_loss_is_the_mean_absolute_error() -> None:
    a, b = torch.tensor([0.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])
    assert l1_loss(a, b).item() == pytest.approx(4 / 3)


# --- against BasicSR's own files, where an installed copy exists -------------------------------


class _TorchvisionVGG(nn.Module):
    """torchvision's ``VGG`` for cfg "E" as far as BasicSR uses it: ``features`` built by
    ``make_layers`` (3x3 convs with padding 1, in-place ReLUs, 2x2 max pools)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in [64, 64, "M", 128, 128, "M"] + [256] * 4 + ["M"] + ([512] * 4 + ["M"]) * 2:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)


@pytest.fixture
def basicsr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, vgg_sd: dict[str, torch.Tensor]
) -> Iterator[types.SimpleNamespace]:
    """BasicSR's vgg_arch, basic_loss and gan_loss modules, loaded from an installed copy
    without running its package ``__init__``; torchvision's ``vgg19`` returns ``vgg_sd``."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("basicsr is not installed (the reference tests above cover the same math)")
    root = Path(next(iter(spec.submodule_search_locations)))
    before = set(sys.modules)

    def stub(name: str, path: Path | None = None, **attrs: object) -> types.ModuleType:
        module = types.ModuleType(name)
        if path is not None:
            module.__path__ = [str(path)]
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    class Registry:
        def register(self, *args: object, **kwargs: object) -> Callable[[object], object]:
            return lambda obj: obj

    def vgg19(*args: object, **kwargs: object) -> _TorchvisionVGG:
        net = _TorchvisionVGG()
        net.load_state_dict(vgg_sd, strict=False)
        return net

    stub("basicsr", root)
    stub("basicsr.archs", root / "archs")
    stub("basicsr.losses", root / "losses")
    stub("basicsr.utils", root / "utils")
    stub("basicsr.utils.registry", ARCH_REGISTRY=Registry(), LOSS_REGISTRY=Registry())
    vgg = stub("torchvision.models.vgg", vgg19=vgg19)
    weights_enum = types.SimpleNamespace(DEFAULT="DEFAULT", IMAGENET1K_V1="IMAGENET1K_V1")
    stub("torchvision.models", Path("/nonexistent"), vgg=vgg, VGG19_Weights=weights_enum)
    stub("torchvision", Path("/nonexistent"))
    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models/vgg19-dcbb9e9d.pth here
    try:
        yield types.SimpleNamespace(
            vgg_arch=importlib.import_module("basicsr.archs.vgg_arch"),
            basic_loss=importlib.import_module("basicsr.losses.basic_loss"),
            gan_loss=importlib.import_module("basicsr.losses.gan_loss"),
        )
    finally:
        for name in set(sys.modules) - before:
            if name.startswith(("basicsr", "torchvision")):
                sys.modules.pop(name, None)


def test_same_as_basicsr(basicsr: types.SimpleNamespace, vgg_sd: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(4)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    gt = torch.rand(1, 3, 16, 16)
    theirs = basicsr.basic_loss.PerceptualLoss(
        layer_weights=dict(REALESRGAN_LAYER_WEIGHTS),
        vgg_type="vgg19",
        use_input_norm=True,
        range_norm=False,
        perceptual_weight=1.0,
        style_weight=0,
        criterion="l1",
    )
    ours = PerceptualLoss(vgg_sd)
    their_feats = theirs.vgg(x)
    our_feats = ours.vgg(x)
    assert list(their_feats) == list(our_feats)
    for name, feature in our_feats.items():
        torch.testing.assert_close(feature, their_feats[name])
    percep, style = theirs(x, gt)
    assert style is None
    torch.testing.assert_close(ours(x, gt), percep)
    (g_ours,) = torch.autograd.grad(ours(x, gt), x)
    (g_theirs,) = torch.autograd.grad(theirs(x, gt)[0], x)
    torch.testing.assert_close(g_ours, g_theirs)

    their_gan = basicsr.gan_loss.GANLoss(
        "vanilla", real_label_val=1.0, fake_label_val=0.0, loss_weight=0.1
    )
    logits = torch.randn(2, 1, 8, 8)
    for real in (True, False):
        for disc in (True, False):
            torch.testing.assert_close(
                GANLoss()(logits, real, is_disc=disc), their_gan(logits, real, is_disc=disc)
            )
    torch.testing.assert_close(l1_loss(x, gt), basicsr.basic_loss.L1Loss()(x, gt))


# --- the loopback server -----------------------------------------------------------------------


# --- VGG19 weights -----------------------------------------------------------------------------


def _publish_vgg(root: Path, vgg_sd: dict[str, torch.Tensor]) -> tuple[Path, str]:
    """torchvision's file layout (convs + classifier keys, the classifier tiny: its shapes are
    not checked) as ``root/vgg19-dcbb9e9d.pth``; returns it and its sha256."""
    path = root / "vgg19-dcbb9e9d.pth"
    torch.save(_with_classifier(vgg_sd, real_shapes=False), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_vgg19_download_checks_prefix_caches_and_then_works_offline(
    server: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    vgg_sd: dict[str, torch.Tensor],
) -> None:
    # A real-shaped (80 MB) state dict keeps the shape check real; it takes a second or two.
    # The published file is not torchvision's, so the expected sha256 prefix is its own.
    started = time.monotonic()
    base, root = server
    path, digest = _publish_vgg(root, vgg_sd)
    monkeypatch.setattr(tw, "VGG19_SHA256_PREFIX", digest[:8])
    monkeypatch.setenv("VIDSR_VGG_URL", base + path.name)
    calls: list[tuple[int, int | None]] = []
    got = tw.vgg19_state_dict(progress=lambda done, total: calls.append((done, total)))
    size = path.stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert got.keys() == vgg_sd.keys()  # the classifier is dropped
    assert all(torch.equal(got[k], v) and got[k].dtype == torch.float32 for k, v in vgg_sd.items())
    cache = home / "models" / "vgg19-features.safetensors"
    assert tw.vgg19_cache_path() == cache and cache.is_file()
    assert list((home / "downloads").iterdir()) == []
    assert [p.name for p in (home / "models").iterdir()] == [cache.name]  # no temporary left
    assert cached_models() == []  # not a generator: `vidsr models list` does not show it
    # now without a network
    monkeypatch.setenv("VIDSR_VGG_URL", UNREACHABLE + "vgg19-dcbb9e9d.pth")
    again = tw.vgg19_state_dict(allow_download=False)
    assert all(torch.equal(again[k], v) for k, v in vgg_sd.items())
    loss = tw.perceptual_loss(allow_download=False)
    assert torch.equal(loss.vgg.features[34].weight, vgg_sd["features.34.weight"])
    assert time.monotonic() - started < 15


def test_vgg19_prefix_mismatch_is_refused_and_nothing_cached(
    server: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    vgg_sd: dict[str, torch.Tensor],
) -> None:
    base, root = server
    path, digest = _publish_vgg(root, vgg_sd)
    monkeypatch.setenv("VIDSR_VGG_URL", base + path.name)
    assert not digest.startswith("dcbb9e9d")  # the real constant: this file is not torchvision's
    with pytest.raises(ModelError, match="sha256") as info:
        tw.vgg19_state_dict()
    assert "\n" not in str(info.value) and "dcbb9e9d" in str(info.value)
    assert not tw.vgg19_cache_path().exists()
    assert list((home / "downloads").iterdir()) == []


def test_vgg19_offline_is_one_line(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIDSR_VGG_URL")
    with pytest.raises(ModelError) as info, spelling("cli"):
        tw.vgg19_state_dict(allow_download=False)  # nothing is fetched
    with spelling("cli"):
        message = str(info.value)
    assert message == (
        "VGG19 weights for the perceptual loss are not available offline; download "
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth and run: vidsr models import "
        "vgg19-dcbb9e9d.pth (or train with --perceptual-weight 0)"
    )
    assert "perceptual_weight=0" in str(info.value)  # the library's spelling
    base, _root = server  # serves nothing: 404
    monkeypatch.setenv("VIDSR_VGG_URL", base + "vgg19-dcbb9e9d.pth")
    with pytest.raises(ModelError) as info:
        tw.vgg19_state_dict()
    assert str(info.value).startswith(
        f"VGG19 weights for the perceptual loss are not available offline; download {base}"
    )
    assert "\n" not in str(info.value)


def test_import_vgg19_round_trip(
    tmp_path: Path, home: Path, vgg_sd: dict[str, torch.Tensor]
) -> None:
    path, _digest = _publish_vgg(tmp_path, vgg_sd)
    assert tw.is_vgg19_state_dict(torch.load(path, weights_only=True))
    cached = tw.import_vgg19(path)
    assert cached == tw.vgg19_cache_path()
    read_once = tw.import_vgg19(Path("not-read.pth"), state_dict=vgg_sd)
    assert read_once == cached
    got = tw.vgg19_state_dict(allow_download=False)
    assert got.keys() == vgg_sd.keys() and all(torch.equal(got[k], v) for k, v in vgg_sd.items())
    # not VGG19: one line, the cache untouched
    other = tmp_path / "rrdb.pth"
    torch.save(RRDBNet(num_feat=4, num_block=1, num_grow_ch=2).state_dict(), other)
    with pytest.raises(ModelError, match=r"is not torchvision's VGG19 \(no features\.0\.weight\)"):
        tw.import_vgg19(other)
    wrong = tmp_path / "vgg_wrong.pth"
    torch.save({**vgg_sd, "features.0.weight": torch.zeros(64, 1, 3, 3)}, wrong)
    with pytest.raises(ModelError, match=r"features\.0\.weight is \(64, 1, 3, 3\)") as info:
        tw.import_vgg19(wrong)
    assert "\n" not in str(info.value)
    assert torch.equal(
        tw.vgg19_state_dict(allow_download=False)["features.0.weight"], vgg_sd["features.0.weight"]
    )


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_import_vgg19_refuses_pickled_code(tmp_path: Path) -> None:
    evil = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({"features.0.weight": torch.zeros(1), "x": _RunsCode()}, evil)
    with pytest.raises(UnsafeModelFileError):
        tw.import_vgg19(evil)
    assert not tw.vgg19_cache_path().exists()


# --- discriminators ----------------------------------------------------------------------------


def test_discriminator_table() -> None:
    rel = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
    assert {name: r.url for name, r in tw.DISCRIMINATORS.items()} == {
        "RealESRGAN_x4plus": rel + "v0.2.2.3/RealESRGAN_x4plus_netD.pth",
        "RealESRGAN_x2plus": rel + "v0.2.2.3/RealESRGAN_x2plus_netD.pth",
        "RealESRGAN_x4plus_anime_6B": rel + "v0.2.2.4/RealESRGAN_x4plus_anime_6B_netD.pth",
    }
    assert all(
        (r.num_in_ch, r.num_feat, r.skip_connection) == (3, 64, True)
        for r in tw.DISCRIMINATORS.values()
    )


def _publish_netd(root: Path, release: str, name: str, sd: dict[str, torch.Tensor]) -> Path:
    path = root / release / f"{name}_netD.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": sd}, path)  # BasicSR's save_network layout
    return path


def test_official_discriminator_layout_loads_strictly_and_is_cached(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    base, root = server
    torch.manual_seed(5)
    official = UNetDiscriminatorSN(num_in_ch=3, num_feat=64, skip_connection=True)
    official(torch.rand(1, 3, 16, 16))  # one power iteration: weight_u/weight_v move
    sd = official.state_dict()
    assert {"conv0.weight", "conv1.weight_orig", "conv1.weight_u", "conv1.weight_v"} <= set(sd)
    assert "conv1.weight" not in sd and "conv9.bias" in sd
    assert tw.is_discriminator_state_dict(sd)
    _publish_netd(root, "v0.2.2.3", "RealESRGAN_x4plus", sd)
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", base)
    net, source = tw.discriminator_for("realesrgan_x4plus")  # registry names, any case
    assert source == f"official:{base}v0.2.2.3/RealESRGAN_x4plus_netD.pth"
    got = net.state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], v) for k, v in sd.items())
    assert net.training and net.skip_connection
    official.eval(), net.eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(net(x), official(x)) and net(x).shape == (1, 1, 32, 32)
    assert (home / "models" / "RealESRGAN_x4plus_netD.safetensors").is_file()
    assert list((home / "downloads").iterdir()) == [] and cached_models() == []
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", UNREACHABLE)
    again, source = tw.discriminator_for("RealESRGAN_x4plus")
    assert source == "cache"
    assert all(torch.equal(again.state_dict()[k], v) for k, v in sd.items())


def test_discriminator_falls_back_to_fresh_offline(home: Path) -> None:
    net, source = tw.discriminator_for("RealESRGAN_x2plus")  # the server is unreachable
    assert source.startswith("fresh: the official discriminator for RealESRGAN_x2plus")
    assert "v0.2.2.3/RealESRGAN_x2plus_netD.pth" in source and "\n" not in source
    assert "vidsr models import RealESRGAN_x2plus_netD.pth" in source
    assert isinstance(net, UNetDiscriminatorSN) and net.skip_connection
    assert net.conv0.weight.shape == (64, 3, 3, 3)
    assert not (home / "models").exists()
    _net, source = tw.discriminator_for("RealESRGAN_x4plus", allow_download=False)
    assert source.startswith("fresh: ")
    for name in ("realesr-animevideov3", "realesr-general-x4v3", "RealESRNet_x4plus", "my-model"):
        net, source = tw.discriminator_for(name)
        assert source == "fresh", name
        assert net.conv0.weight.shape == (64, 3, 3, 3) and net.skip_connection


def test_import_discriminator_and_bad_downloads(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: Path
) -> None:
    torch.manual_seed(6)
    sd = UNetDiscriminatorSN(num_feat=32).state_dict()  # any width is recognised
    path = tmp_path / "realesr-animevideov3_netD.pth"
    torch.save(sd, path)
    cached = tw.import_discriminator(path)
    assert cached == home / "models" / "realesr-animevideov3_netD.safetensors"
    net, source = tw.discriminator_for("realesr-animevideov3")
    assert source == "cache" and net.conv0.weight.shape == (32, 3, 3, 3)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sd.items())
    # a download that is not a discriminator: one line, nothing cached
    base, root = server
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", base)
    _publish_netd(
        root,
        "v0.2.2.4",
        "RealESRGAN_x4plus_anime_6B",
        RRDBNet(num_feat=4, num_block=1, num_grow_ch=2).state_dict(),
    )
    with pytest.raises(ModelError, match="is not a UNetDiscriminatorSN") as info:
        tw.discriminator_for("RealESRGAN_x4plus_anime_6B")
    assert "\n" not in str(info.value)
    assert not tw.discriminator_cache_path("RealESRGAN_x4plus_anime_6B").exists()
    broken = dict(sd)
    del broken["conv5.weight_u"]
    with pytest.raises(ModelError, match=r"no conv5\.weight_u"):
        tw.import_discriminator(_publish_netd(tmp_path, "x", "broken", broken), "broken")
