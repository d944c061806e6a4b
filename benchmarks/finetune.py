"""Speed of ``vidsr finetune train`` on this machine: iterations a second, the degradation's
share of a batch, and a checkpoint's size and write time.

Builds an HR-only dataset from a generated anime-like clip (tests/test_finetune.py's builder,
scaled up to 480x270), then runs the trainer in this process on realesr-animevideov3 at the
given ground-truth size and batch, with the GAN on and the perceptual loss on a random VGG19
(speed does not depend on its weights; the real ones are not here).

    .venv/bin/python benchmarks/finetune.py                       # GT 128, batch 4, 6 iterations
    .venv/bin/python benchmarks/finetune.py --gt-size 96 --batch-size 2 --iters 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--degradation", default="realesrgan")
    args = parser.parse_args()
    import test_finetune as T  # the clip builder

    from vidsr.training import train as TR
    from vidsr.training.data import prepare_dataset
    from vidsr.training.losses import PerceptualLoss

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        T.W, T.H = 480, 272
        clip = T.write_clip(tmp / "ep.mkv", T.anime_frames(48))
        ds = prepare_dataset([clip], tmp / "ds", frames=16)
        del ds
        cfg = TR.TrainConfig(
            dataset=tmp / "ds", model="realesr-animevideov3", output=tmp / "run",
            iters=args.iters + 1, batch_size=args.batch_size, gt_size=args.gt_size,
            save_every=10**6, val_every=10**6, val_count=0, perceptual_weight=0.0,
            degradation=args.degradation,
        )  # fmt: skip
        t = TR.Trainer(cfg)
        t.percep = PerceptualLoss(None, perceptual_weight=1.0)  # random VGG19: same cost
        t.open()
        t.step()  # warm-up
        batches = []
        t0 = time.perf_counter()
        for _ in range(args.iters):
            b0 = time.perf_counter()
            t.batch()
            batches.append(time.perf_counter() - b0)
        batch_s = float(np.mean(batches))
        t0 = time.perf_counter()
        for _ in range(args.iters):
            t.step()
        step_s = (time.perf_counter() - t0) / args.iters
        c0 = time.perf_counter()
        ckpt = t._save()
        save_s = time.perf_counter() - c0
        size = sum(f.stat().st_size for f in ckpt.iterdir())
        print(f"machine: {torch.get_num_threads()} threads; torch {torch.__version__}")
        print(
            f"GT {args.gt_size}, batch {args.batch_size}, {args.degradation}, GAN on, perceptual on (VGG19)"
        )
        print(f"iterations a second: {1 / step_s:.3f} ({step_s:.2f} s each, batch making included)")
        print(f"batch making (crops + degradation + pool): {1000 * batch_s:.0f} ms")
        print(f"checkpoint: {size / 2**20:.1f} MiB in {save_s:.2f} s ({ckpt.name})")


if __name__ == "__main__":
    main()
