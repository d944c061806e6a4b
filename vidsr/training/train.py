"""``vidsr finetune train``: Real-ESRGAN's training recipe on a prepared dataset, resumable.

One iteration is Real-ESRGAN's ``RealESRGANModel``: a batch of ground-truth crops (HR-only
datasets: degraded on the fly, :mod:`vidsr.training.degrade`, through the training-pair pool;
paired datasets: aligned crops), the generator step (L1 against the USM-sharpened ground truth,
VGG19 perceptual loss against it, GAN loss against ``UNetDiscriminatorSN``), one discriminator
step (real: the ground truth, fake: the generator's output), then the EMA of the generator.
A weight of 0 leaves its loss out (no VGG weights are needed for ``--perceptual-weight 0``, no
discriminator for ``--gan-weight 0``).

The run folder (``-o RUN``) holds ``config.json`` (the recipe and its fingerprint),
``losses.jsonl`` (one line per iteration), ``losses.png``, ``val/`` (the held-out set and a
grid per validation) and ``checkpoints/iter_NNNNNNN/`` (generator, EMA and discriminator as
safetensors; both optimiser states as safetensors + JSON; every random state; the pair pool),
each written under a temporary name and renamed whole, with ``checkpoints/latest`` naming the
newest complete one. The same command on the same folder continues from it: on the CPU with
the same seed, a run resumed after a kill gives bit-identical losses and weights.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidsr.errors import InputError, Interrupted, ModelError, OutputError, UsageError, opt
from vidsr.files import atomic_output
from vidsr.training import data as D
from vidsr.training import degrade as G
from vidsr.training.losses import GANLoss, l1_loss

#: Real-ESRGAN's dataset crop (crop_pad_size 400) against its training patch (gt_size 256):
#: degradations run on the larger crop, then the patch is cut from it (paired_random_crop).
CROP_RATIO = 400 / 256
ARCHS = ("SRVGGNetCompact", "RRDBNet")


@dataclass(frozen=True)
class TrainConfig:
    """What ``vidsr finetune train`` was asked. ``recipe()`` is what the run's fingerprint
    covers: everything that changes the weights (not ``iters``, which a later command may
    extend, nor how often it saves, validates or reports)."""

    dataset: Path
    model: str
    output: Path
    iters: int = 1000
    batch_size: int = 4
    gt_size: int = 128
    seed: int = 0
    save_every: int = 100
    val_every: int = 100
    degradation: str = "realesrgan"
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    gan_weight: float = 0.1
    lr: float = 1e-4
    ema: float = 0.999
    val_count: int = 4
    keep_checkpoints: int = 0
    device: str = "auto"
    precision: str = "auto"

    def recipe(self, precision: str) -> dict[str, Any]:
        keep = (
            "model", "batch_size", "gt_size", "seed", "degradation", "pixel_weight",
            "perceptual_weight", "gan_weight", "lr", "ema", "val_count",
        )  # fmt: skip
        return {k: getattr(self, k) for k in keep} | {"precision": precision}


Event = Callable[[dict[str, Any]], None]


# --- small pieces ------------------------------------------------------------------------------


def train_precision(asked: str, cuda: bool, bf16: bool) -> str:
    """The precision rule of training: fp32 on the CPU (another one refused); on CUDA
    ``auto`` is bf16 autocast where the GPU has bf16 (``bf16``), else fp16 with a gradient
    scaler; an explicit one as asked (bf16 refused where the GPU has none)."""
    if not cuda:
        if asked not in ("auto", "fp32"):
            raise UsageError(f"finetune trains in fp32 on the CPU; leave {opt('precision')} out")
        return "fp32"
    if asked == "auto":
        return "bf16" if bf16 else "fp16"
    if asked == "bf16" and not bf16:
        raise UsageError(
            f"this GPU has no bfloat16 arithmetic; use {opt('precision', 'fp16')} (with a "
            "gradient scaler) or fp32"
        )
    return asked


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """What the forward passes autocast to (None: no autocast, fp32 throughout). The
    degradations, the EMA and the optimiser states stay fp32 whatever this is."""
    if device_type != "cuda" or precision == "fp32":
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def needs_scaler(precision: str) -> bool:
    """fp16 training needs a gradient scaler (bf16 has fp32's range)."""
    return precision == "fp16"


def _generator_of(model: str) -> tuple[nn.Module, Any]:
    """The generator to fine-tune (train mode, fp32, grads on) and its loaded network."""
    from vidsr.models.loader import load_network

    net = load_network(model)
    _refuse_without_recipe(net.name, net.loader, net.arch)
    module = copy.deepcopy(net.module).float().train()
    module.requires_grad_(True)
    return module, net


def _seeded(
    seed: int, device: torch.device | None = None
) -> tuple[np.random.Generator, torch.Generator]:
    """The run's two generators: numpy's (upstream's ``random``/``np.random`` draws) and
    torch's on the device the degradations run on (upstream's global torch generator)."""
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    return np.random.Generator(np.random.PCG64(seed)), gen


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    save_file(plain, str(path), metadata={"json": json.dumps(meta)})


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A checkpoint file's tensors and its JSON header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = json.loads((f.metadata() or {}).get("json", "{}"))
        return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118


def _optim_tensors(optim: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as tensors + JSON (no pickle)."""
    sd = optim.state_dict()
    tensors, plain = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value
            else:
                plain[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def _optim_load(optim: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["plain"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optim.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def psnr(a: torch.Tensor, b: torch.Tensor, border: int) -> float:
    """PSNR (RGB, 8-bit levels) with ``border`` pixels cropped from each side."""
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    a8, b8 = (a.clamp(0, 1) * 255).round(), (b.clamp(0, 1) * 255).round()
    mse = float(((a8 - b8) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _to_tensor(rgbs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous()


# --- the run -----------------------------------------------------------------------------------


class Trainer:
    """One ``vidsr finetune train`` run: set up (or resumed) by :meth:`open`, run by
    :meth:`run_loop`."""

    def __init__(self, cfg: TrainConfig, on_event: Event | None = None) -> None:
        from vidsr.pipeline.infer import resolve_device

        self.cfg = cfg
        self.say = on_event or (lambda e: None)
        self.device = resolve_device(cfg.device)
        self.precision = self._precision()
        self.run = cfg.output
        self.manifest = D.read_manifest(cfg.dataset)
        self.paired = self.manifest["kind"] == "paired"
        self.net_g, self.base = _generator_of(cfg.model)
        self.scale = int(self.base.scale)
        if self.paired and self.manifest["scale"] != self.scale:
            raise UsageError(
                f"{cfg.dataset} pairs frames at x{self.manifest['scale']}, but {self.base.name} "
                f"upscales x{self.scale}: pair at its scale or fine-tune a x"
                f"{self.manifest['scale']} model"
            )
        if cfg.gt_size % (4 * self.scale):
            raise UsageError(f"{opt('gt_size')} must be a multiple of {4 * self.scale}")
        self.net_g.to(self.device)
        self.ema = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        self.net_d, self.d_source = self._discriminator()
        self.percep = self._perceptual()
        self.gan_g = GANLoss(loss_weight=cfg.gan_weight)  # the generator's term
        self.gan_d = GANLoss(loss_weight=1.0)  # the discriminator's, unweighted
        self.opt_g = torch.optim.Adam(self.net_g.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.opt_d = (
            torch.optim.Adam(self.net_d.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
            if self.net_d is not None
            else None
        )
        self.scaler = torch.amp.GradScaler("cuda") if needs_scaler(self.precision) else None
        self.rng, self.gen = _seeded(cfg.seed, self.device)
        self.degradation = G.preset(cfg.degradation)
        b = cfg.batch_size
        self.pool = G.PairPool(size=max(b, (self.degradation.queue_size // b) * b))
        self.iter = 0
        self.stop = False  # set by a signal: save and stop between iterations
        self.val_items: list[dict[str, Any]] = []
        self.train_items: list[dict[str, Any]] = []

    # --- set-up

    def _precision(self) -> str:
        from vidsr.pipeline.infer import bf16_supported

        cuda = self.device.type == "cuda"
        return train_precision(self.cfg.precision, cuda, cuda and bf16_supported(self.device))

    def _discriminator(self) -> tuple[nn.Module | None, str]:
        if self.cfg.gan_weight == 0:
            return None, "none (--gan-weight 0)"
        from vidsr.training.weights import discriminator_for

        name = self.base.name
        with torch.random.fork_rng(devices=[]):  # a fresh one's weights: from the seed
            torch.manual_seed(self.cfg.seed)
            try:
                net_d, source = discriminator_for(name)
            except UsageError:  # a file path: no released discriminator to look for
                net_d, source = _fresh()
        return net_d.to(self.device).train(), source

    def _perceptual(self) -> nn.Module | None:
        if self.cfg.perceptual_weight == 0:
            return None
        from vidsr.training.weights import perceptual_loss

        return perceptual_loss(perceptual_weight=self.cfg.perceptual_weight).to(self.device)

    def _fingerprint(self) -> dict[str, Any]:
        recipe = self.cfg.recipe(self.precision)
        recipe["weights"] = self.base.digest
        recipe["dataset"] = D.manifest_digest(self.cfg.dataset)
        return recipe

    def open(self) -> None:
        """A new run folder, or the one there continued (refused when it holds another
        recipe)."""
        config = self.run / "config.json"
        prints = self._fingerprint()
        if config.exists():
            old = json.loads(config.read_text()).get("fingerprint", {})
            if old != prints:
                diff = sorted(k for k in set(old) | set(prints) if old.get(k) != prints.get(k))
                raise UsageError(
                    f"{self.run} holds a run with another recipe ({', '.join(diff)} differ); "
                    "give another -o, or delete it to start over"
                )
        else:
            self.run.mkdir(parents=True, exist_ok=True)
            with atomic_output(config) as tmp:
                tmp.write_text(
                    json.dumps(
                        {"fingerprint": prints, "config": _plain(asdict(self.cfg))}, indent=1
                    )
                )
        self._split()
        found = newest_checkpoint(self.run)
        for stale in (self.run / "checkpoints").glob(".iter_*.partial"):
            shutil.rmtree(stale, ignore_errors=True)  # a save cut short by a kill
        if found is not None:
            self._load(found)
            self.say({"event": "resumed", "iter": self.iter, "checkpoint": str(found)})
        else:
            self._validation_set()
        self._trim_log("losses.jsonl")
        self._trim_log("val/psnr.jsonl")
        self.say({"event": "started", "iter": self.iter, "discriminator": self.d_source,
                  "precision": self.precision, "device": str(self.device)})  # fmt: skip

    def _split(self) -> None:
        """The held-out validation items: fixed by the seed, never trained on."""
        items = list(self.manifest["items"])
        order = np.random.Generator(np.random.PCG64(self.cfg.seed + 1)).permutation(len(items))
        n_val = min(self.cfg.val_count, max(0, len(items) - 1))
        self.val_items = [items[i] for i in sorted(order[:n_val])]
        self.train_items = [items[i] for i in sorted(order[n_val:])]

    # --- one batch

    def _crop_size(self) -> int:
        if self.paired:
            return self.cfg.gt_size
        m = 4 * self.scale
        return max(self.cfg.gt_size, math.ceil(self.cfg.gt_size * CROP_RATIO / m) * m, 80)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lq, gt) for one iteration, fp32 on the device."""
        cfg, rng, folder = self.cfg, self.rng, self.cfg.dataset
        picks = rng.integers(0, len(self.train_items), cfg.batch_size)
        crop = self._crop_size()
        hrs, lrs = [], []
        for i in picks:
            item = self.train_items[int(i)]
            hr = D.load_rgb(folder, item["hr"])
            lr = D.load_rgb(folder, item["lr"]) if self.paired else None
            hr, lr = D.random_crop(hr, lr, crop, self.scale, rng)
            hrs.append(hr)
            if lr is not None:
                lrs.append(lr)
        gt = _to_tensor(hrs).to(self.device)
        if self.paired:
            return _to_tensor(lrs).to(self.device), gt
        kernels = G.stack_kernels([G.make_kernels(self.degradation, rng) for _ in picks])
        gt_usm = G.usm_sharp(gt)
        lq = G.degrade(
            gt, kernels.to(self.device), self.degradation, self.scale, self.gen, rng, gt_usm=gt_usm
        )
        (gt,), lq = G.paired_random_crop([gt], lq, cfg.gt_size, self.scale, rng)
        lq, gt = self.pool(lq.contiguous(), gt.contiguous(), self.gen)
        return lq, gt

    # --- one iteration

    def _autocast(self) -> Any:
        dtype = autocast_dtype(self.precision, self.device.type)
        if dtype is None:
            import contextlib

            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def step(self) -> dict[str, float]:
        """One iteration of Real-ESRGAN's ``optimize_parameters``; its losses."""
        cfg = self.cfg
        lq, gt = self.batch()
        gt_usm = G.usm_sharp(gt)
        losses: dict[str, torch.Tensor] = {}  # read back once, at the end (one device sync)
        d = self.net_d
        if d is not None:
            d.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.net_g(lq)
            total = out.new_zeros(())
            if cfg.pixel_weight:
                pix = cfg.pixel_weight * l1_loss(out.float(), gt_usm)
                total = total + pix
                losses["l_pix"] = pix.detach()
            if self.percep is not None:
                per = self.percep(out.float(), gt_usm)
                total = total + per
                losses["l_percep"] = per.detach()
            if d is not None:
                gan = self.gan_g(d(out), True, is_disc=False)
                total = total + gan
                losses["l_gan"] = gan.detach()
        self._backward(total, self.opt_g)
        if d is not None and self.opt_d is not None:
            d.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            with self._autocast():
                real = self.gan_d(d(gt), True, is_disc=True)
            self._backward(real, None)
            with self._autocast():
                fake = self.gan_d(d(out.detach().clone().float()), False, is_disc=True)
            self._backward(fake, self.opt_d)
            losses["l_d_real"], losses["l_d_fake"] = real.detach(), fake.detach()
        if self.scaler is not None:
            self.scaler.update()  # once, after both optimisers stepped
        self._ema_update()
        self.iter += 1
        values = torch.stack([v.float() for v in losses.values()]).tolist()
        return dict(zip(losses, values, strict=True))

    def _backward(self, loss: torch.Tensor, optim: torch.optim.Optimizer | None) -> None:
        if self.scaler is None:
            loss.backward()
            if optim is not None:
                optim.step()
            return
        self.scaler.scale(loss).backward()
        if optim is not None:
            self.scaler.step(optim)

    @torch.no_grad()
    def _ema_update(self) -> None:
        decay = self.cfg.ema
        for e, p in zip(self.ema.parameters(), self.net_g.parameters(), strict=True):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        for e, b in zip(self.ema.buffers(), self.net_g.buffers(), strict=True):
            e.copy_(b)

    # --- checkpoints

    def _save(self) -> Path:
        """This iteration's checkpoint, written whole under a temporary name, then renamed;
        ``latest`` moved to it last. ``OutputError`` (one line) where the disk refuses."""
        try:
            return self._save_to()
        except OSError as exc:
            raise OutputError(
                f"cannot write a checkpoint in {self.run}: {exc.strerror or exc}; the newest "
                "complete one is kept"
            ) from None

    def _save_to(self) -> Path:
        folder = self.run / "checkpoints"
        final = folder / f"iter_{self.iter:07d}"
        tmp = folder / f".iter_{self.iter:07d}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_tensors(tmp / "net_g.safetensors", self.net_g.state_dict(), {})
        _save_tensors(tmp / "net_g_ema.safetensors", self.ema.state_dict(), {})
        if self.net_d is not None and self.opt_d is not None:
            _save_tensors(tmp / "net_d.safetensors", self.net_d.state_dict(), {})
            _save_tensors(tmp / "optim_d.safetensors", *_optim_tensors(self.opt_d))
        _save_tensors(tmp / "optim_g.safetensors", *_optim_tensors(self.opt_g))
        pool = self.pool.state()
        pool_tensors = {k: v for k, v in pool.items() if isinstance(v, torch.Tensor)}
        pool_plain = {k: v for k, v in pool.items() if not isinstance(v, torch.Tensor)}
        gen_state = self.gen.get_state()
        _save_tensors(tmp / "state.safetensors", {**{f"pool.{k}": v for k, v in pool_tensors.items()}, "torch_generator": gen_state}, {
            "iter": self.iter,
            "numpy": self.rng.bit_generator.state,
            "pool": pool_plain,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        })  # fmt: skip
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        with atomic_output(folder / "latest") as t:
            t.write_text(final.name)
        self._prune(folder, final)
        return final

    def _prune(self, folder: Path, newest: Path) -> None:
        """Keep the newest ``keep_checkpoints`` checkpoints (0: every one), once ``latest``
        names the new one."""
        keep = self.cfg.keep_checkpoints
        if keep <= 0:
            return
        done = sorted(p for p in folder.glob("iter_*") if p.is_dir() and p != newest)
        for old in done[: max(0, len(done) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)

    def _load(self, folder: Path) -> None:
        try:
            self._load_from(folder)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            text = str(exc).strip().splitlines()
            raise InputError(
                f"{folder}: a damaged checkpoint ({text[0][:160] if text else type(exc).__name__});"
                " delete it to continue from the one before"
            ) from None

    def _load_from(self, folder: Path) -> None:
        sd, _ = load_tensors(folder / "net_g.safetensors")
        self.net_g.load_state_dict(sd)
        sd, _ = load_tensors(folder / "net_g_ema.safetensors")
        self.ema.load_state_dict(sd)
        if self.net_d is not None and self.opt_d is not None:
            sd, _ = load_tensors(folder / "net_d.safetensors")
            self.net_d.load_state_dict(sd)
            _optim_load(self.opt_d, *load_tensors(folder / "optim_d.safetensors"))
        _optim_load(self.opt_g, *load_tensors(folder / "optim_g.safetensors"))
        tensors, meta = load_tensors(folder / "state.safetensors")
        self.iter = int(meta["iter"])
        self.rng.bit_generator.state = meta["numpy"]
        self.gen.set_state(tensors["torch_generator"])
        pool = {
            k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("pool.")
        } | meta["pool"]
        self.pool.load_state(pool)
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.val_items = json.loads((self.run / "val" / "items.json").read_text())

    # --- the loss log

    def _trim_log(self, name: str) -> None:
        """Keep only the lines of iterations up to the checkpoint resumed from."""
        log = self.run / name
        if not log.exists():
            return
        keep = []
        for ln in log.read_text().splitlines():
            try:
                row = json.loads(ln)
            except ValueError:
                continue  # a line cut short by a kill
            if row.get("iter", 0) <= self.iter:
                keep.append(ln)
        with atomic_output(log) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep))

    def _log(self, losses: dict[str, float]) -> None:
        with open(self.run / "losses.jsonl", "a") as f:
            f.write(json.dumps({"iter": self.iter, **losses}) + "\n")

    # --- validation

    def _validation_set(self) -> None:
        """The held-out pairs, made once: HR crops (centre, at most 4 x gt_size) and their
        LR (the dataset's, or one fixed degradation), stored in ``val/``."""
        from PIL import Image

        val = self.run / "val"
        val.mkdir(parents=True, exist_ok=True)
        rng, gen = _seeded(self.cfg.seed + 2)
        side = 4 * self.cfg.gt_size
        for n, item in enumerate(self.val_items):
            hr = D.load_rgb(self.cfg.dataset, item["hr"])
            if not self.paired:  # small frames padded as training crops are
                hr = D.pad_to(hr, self._crop_size())
            h, w = hr.shape[:2]
            m = 4 * self.scale
            ch, cw = min(h, side), min(w, side)
            ch, cw = ch - ch % m, cw - cw % m
            top, left = (
                (h - ch) // 2 // self.scale * self.scale,
                (w - cw) // 2 // self.scale * self.scale,
            )
            if self.paired:
                lr = D.load_rgb(self.cfg.dataset, item["lr"])
                s = self.scale
                lr = lr[top // s : (top + ch) // s, left // s : (left + cw) // s]
                hr = hr[top : top + ch, left : left + cw]
                lq = _to_tensor([lr])
            else:
                hr = hr[top : top + ch, left : left + cw]
                gt = _to_tensor([hr])
                kern = G.stack_kernels([G.make_kernels(self.degradation, rng)])
                lq = G.degrade(gt, kern, self.degradation, self.scale, gen, rng)
            for name, t in (("hr", _to_tensor([hr])), ("lr", lq)):
                arr = (t[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
                Image.fromarray(arr, "RGB").save(val / f"{n:02d}_{name}.png")
        (val / "items.json").write_text(json.dumps(self.val_items))

    def _val_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        val = self.run / "val"
        pairs = []
        for n in range(len(self.val_items)):
            lr = D.load_rgb(val, f"{n:02d}_lr.png")
            hr = D.load_rgb(val, f"{n:02d}_hr.png")
            pairs.append((_to_tensor([lr]), _to_tensor([hr])))
        return pairs

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """PSNR of the base model and of the current EMA on the held-out set, and a grid
        PNG (LR enlarged | base | current | HR) per validation."""
        from PIL import Image

        base = self.base.module.to(self.device).eval()
        rows, p_base, p_ema = [], [], []
        for lq, hr in self._val_pairs():
            lq = lq.to(self.device)
            b = base(lq).clamp(0, 1).cpu()
            e = self.ema(lq).clamp(0, 1).cpu()
            p_base.append(psnr(b, hr, self.scale))
            p_ema.append(psnr(e, hr, self.scale))
            big = torch.nn.functional.interpolate(lq.cpu(), size=hr.shape[-2:], mode="nearest")
            rows.append(torch.cat([big, b, e, hr], dim=3)[0])
        result = {
            "event": "validation",
            "iter": self.iter,
            "psnr_base": round(float(np.mean(p_base)), 3) if p_base else None,
            "psnr_ema": round(float(np.mean(p_ema)), 3) if p_ema else None,
        }
        if rows:
            width = max(r.shape[-1] for r in rows)
            padded = [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows]
            grid = torch.cat(padded, dim=1).permute(1, 2, 0).numpy()
            img = Image.fromarray((grid * 255).round().clip(0, 255).astype(np.uint8), "RGB")
            path = self.run / "val" / f"iter_{self.iter:07d}.png"
            with atomic_output(path) as tmp:
                img.save(tmp, format="PNG")
            result["grid"] = str(path)
        with open(self.run / "val" / "psnr.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        return result

    # --- the loop

    def run_loop(self, bar: Any = None) -> dict[str, Any]:
        """Iterate to ``cfg.iters`` (saving, validating and reporting on the way); the
        final figures."""
        cfg = self.cfg
        if self.iter == 0 and self.val_items:
            self.say(self.validate())
        smooth: dict[str, float] = {}
        t0, start = time.perf_counter(), self.iter
        while self.iter < cfg.iters:
            if self.stop:
                self.interrupted()
                raise Interrupted(
                    f"stopped at iteration {self.iter}, saved; the same command continues"
                )
            losses = self.step()
            self._log(losses)
            for k, v in losses.items():
                smooth[k] = v if k not in smooth else 0.9 * smooth[k] + 0.1 * v
            rate = (self.iter - start) / max(1e-9, time.perf_counter() - t0)
            self.say({"event": "iter", "iter": self.iter, "it_s": round(rate, 3), **losses})
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in smooth.items()}, refresh=False)
            if self.iter % cfg.save_every == 0 or self.iter == cfg.iters:
                path = self._save()
                plot_losses(self.run)
                self.say({"event": "saved", "iter": self.iter, "checkpoint": str(path)})
            if self.val_items and (self.iter % cfg.val_every == 0 or self.iter == cfg.iters):
                self.say(self.validate())
        return {"event": "done", "iter": self.iter, "run": str(self.run), **smooth}

    def interrupted(self) -> None:
        """Save where the run is (between iterations), so nothing done is lost."""
        if (
            self.iter
            and newest_checkpoint(self.run) != self.run / "checkpoints" / f"iter_{self.iter:07d}"
        ):
            self._save()


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def _fresh() -> tuple[nn.Module, str]:
    from vidsr.training.weights import fresh_discriminator

    return fresh_discriminator(), "fresh"


def plot_losses(run: Path) -> Path | None:
    """``losses.png``: each loss against the iteration (smoothed), from ``losses.jsonl``."""
    from PIL import Image, ImageDraw

    log = run / "losses.jsonl"
    if not log.exists():
        return None
    rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln]
    if not rows:
        return None
    names = sorted({k for r in rows for k in r if k != "iter"})
    w, h, pad = 640, 360, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    last = rows[-1]["iter"] or 1
    for n, name in enumerate(names):
        vals, s = [], None
        for r in rows:
            if name in r:
                s = r[name] if s is None else 0.95 * s + 0.05 * r[name]
                vals.append((r["iter"], s))
        if len(vals) < 2:
            continue
        lo, hi = min(v for _, v in vals), max(v for _, v in vals)
        span = (hi - lo) or 1.0
        pts = [
            (pad + (w - 2 * pad) * i / last, h - pad - (h - 2 * pad) * (v - lo) / span)
            for i, v in vals
        ]
        draw.line(pts, fill=colours[n % len(colours)], width=2)
        draw.text((pad, 8 + 12 * n), f"{name}: {vals[-1][1]:.4f}", fill=colours[n % len(colours)])
    out = run / "losses.png"
    with atomic_output(out) as tmp:
        img.save(tmp, format="PNG")
    return out


def newest_checkpoint(run: Path) -> Path | None:
    """The checkpoint ``latest`` names, else (it names one that is gone) the newest complete
    ``iter_*`` folder, else None."""
    folder = run / "checkpoints"
    latest = folder / "latest"
    if latest.exists():
        named = folder / latest.read_text().strip()
        if (named / "state.safetensors").exists():
            return named
    done = sorted(p for p in folder.glob("iter_*") if (p / "state.safetensors").exists())
    return done[-1] if done else None


def check_model(model: str) -> None:
    """``ModelError``/``UsageError`` early for a model that cannot be fine-tuned."""
    from vidsr.models.loader import describe_model

    facts = describe_model(model)
    _refuse_without_recipe(facts.name, facts.loader, facts.arch)


def _refuse_without_recipe(name: str, loader: str, arch: str) -> None:
    if loader != "vidsr" or arch not in ARCHS:
        raise ModelError(
            f"finetune trains Real-ESRGAN's architectures ({', '.join(ARCHS)}) with its recipe; "
            f"{name} is a {arch} model, which has none here"
        )


def config_from(dataset: Path, settings: Any) -> TrainConfig:
    """The run's :class:`TrainConfig` from ``vidsr finetune train``'s settings."""
    s = settings
    return TrainConfig(
        dataset=Path(dataset), model=s.model, output=Path(s.output), iters=s.iters,
        batch_size=s.batch_size, gt_size=s.gt_size, seed=s.seed, save_every=s.save_every,
        val_every=s.val_every, degradation=s.degradation, pixel_weight=s.pixel_weight,
        perceptual_weight=s.perceptual_weight, gan_weight=s.gan_weight, lr=s.learning_rate,
        ema=s.ema, val_count=s.val_count, device=s.device, precision=s.precision,
        keep_checkpoints=s.keep_checkpoints,
    )  # fmt: skip


def run_training(dataset: Path, settings: Any, on_event: Event | None = None) -> dict[str, Any]:
    """Train (or continue) the run ``settings.output`` on ``dataset``; with ``on_event``
    None a tqdm bar on stderr shows it/s, smoothed losses and the time left."""
    import sys

    from tqdm import tqdm

    cfg = config_from(dataset, settings)
    if cfg.pixel_weight == cfg.perceptual_weight == cfg.gan_weight == 0:
        raise UsageError("every loss weight is 0: nothing to train")
    check_model(cfg.model)
    bar: Any = None

    def show(event: dict[str, Any]) -> None:  # without --json: what a person wants to see
        text = _event_line(event)
        if text:
            (bar.write if bar is not None else print)(text, file=sys.stderr)

    trainer = Trainer(cfg, on_event or show)
    trainer.open()
    if on_event is None:
        bar = tqdm(total=cfg.iters, initial=trainer.iter, unit="it", desc="finetune",
                   file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    with _StopOnSignals(trainer):
        try:
            return trainer.run_loop(bar)
        finally:
            if bar is not None:
                bar.close()


def _event_line(event: dict[str, Any]) -> str | None:
    kind = event.get("event")
    if kind == "started":
        return f"finetune: from iteration {event['iter']}, {event['precision']} on {event['device']}, discriminator {event['discriminator']}"
    if kind == "resumed":
        return f"finetune: resumed from {event['checkpoint']}"
    if kind == "validation":
        return f"finetune: iteration {event['iter']}: PSNR base {event['psnr_base']} dB, now {event['psnr_ema']} dB ({event.get('grid')})"
    return None


class _StopOnSignals:
    """SIGINT/SIGTERM set ``trainer.stop`` (the loop saves and stops between iterations)
    instead of raising mid-step; a second one raises at once."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.old: dict[int, Any] = {}

    def __enter__(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer.stop:
            raise Interrupted("stopped; the newest checkpoint is kept")
        self.trainer.stop = True

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self.old.items():
            signal.signal(sig, handler)
