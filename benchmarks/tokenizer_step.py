"""Tokenizer throughput: training images/s (generator + discriminator step) and encoding images/s.

    python benchmarks/tokenizer_step.py [--config configs/tokenizer/vqgan_shapes.yaml] [--device cpu|cuda]
                                        [--bf16] [KEY=VALUE ...]

e.g. the papers' 256 px f = 16 tokenizer on a GPU, in bf16 autocast as train.mixed_precision=bf16 runs it:
    python benchmarks/tokenizer_step.py --config configs/replicate/vqgan_f16.yaml --device cuda --bf16 \
        data.source=shapes data.path=null

Runs on the CPU, and on the GPU too when one is present. Training is measured with the GAN
terms on (the slower phase) and off; numbers are medians over timed repeats after warmup.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from timing import median_time

from lgvq.config import load_config
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.losses import VQGANLoss
from lgvq.tokenizers.model import VQTokenizer
from lgvq.training.optim import build_adam


def bench(cfg: TokenizerRunConfig, device: torch.device, batch: int, warmup: int, repeats: int,
          bf16: bool = False) -> dict:
    torch.manual_seed(0)
    tok = VQTokenizer.from_model_config(cfg.model, cfg.data.image_size).to(device).train()
    loss = VQGANLoss(cfg.loss).to(device)
    opt_g = build_adam(tok.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = build_adam(loss.discriminator.parameters(), lr=1e-4) if loss.discriminator else None
    x = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size, device=device) * 2 - 1

    def autocast():
        return torch.autocast(device.type, torch.bfloat16) if bf16 else contextlib.nullcontext()

    def train_step(gan: bool):
        step = cfg.loss.disc_start if gan else 0
        with autocast():
            out = tok(x)
            g = loss.generator_loss(x, out.reconstruction, out.losses["vq"], step, tok.last_layer_weight())
        g["total"].backward()
        opt_g.step()
        opt_g.zero_grad()
        if gan and opt_d is not None:
            with autocast():
                d = loss.discriminator_loss(loss.discriminator, x, out.reconstruction)["d_loss"]
            d.backward()
            opt_d.step()
            opt_d.zero_grad()

    @torch.no_grad()
    def encode():
        with autocast():
            tok.encode(x)

    results = {"train_img_s": batch / median_time(lambda: train_step(False), device, warmup, repeats)}
    if loss.discriminator is not None:
        results["train_gan_img_s"] = batch / median_time(lambda: train_step(True), device, warmup, repeats)
    tok.eval()
    results["encode_img_s"] = batch / median_time(encode, device, warmup, repeats)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/tokenizer/vqgan_shapes.yaml")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (as train.mixed_precision=bf16)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = p.parse_args()
    cfg = load_config(TokenizerRunConfig, args.config, args.overrides)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    batch = args.batch_size or cfg.train.batch_size
    print(f"config {args.config}: {cfg.data.image_size}px, batch {batch}, {'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'device':<8}{'train img/s':>14}{'train+GAN img/s':>18}{'encode img/s':>15}")
    for name in devices:
        r = bench(cfg, torch.device(name), batch, args.warmup, args.repeats, args.bf16)
        print(f"{name:<8}{r['train_img_s']:>14.1f}{r.get('train_gan_img_s', float('nan')):>18.1f}"
              f"{r['encode_img_s']:>15.1f}")


if __name__ == "__main__":
    main()
