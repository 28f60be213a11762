"""Time of an LG-VQ training step over a plain VQ-GAN step, measured side by side.

    python benchmarks/alignment_overhead.py [--config configs/tokenizer/vqgan_shapes.yaml]
                                            [--overlay configs/lgvq/shapes.yaml]

Both tokenizers share the architecture; the LG-VQ one adds the alignment modules and losses.
Text features are cached before timing (as in training, where every caption is encoded once),
and the two steps alternate so machine noise hits both alike. Target: ratio <= 1.25.
"""

from __future__ import annotations

import argparse

import torch
from timing import side_by_side

from lgvq.config import load_config
from lgvq.data.datasets import build_dataset
from lgvq.data.loader import train_stream
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.losses import VQGANLoss
from lgvq.tokenizers.model import VQTokenizer
from lgvq.tokenizers.training import AlignmentText
from lgvq.training.optim import build_adam


def make_step(cfg: TokenizerRunConfig, text: AlignmentText | None):
    torch.manual_seed(0)
    spec = text.alignment_spec() if text is not None else None
    tok = VQTokenizer.from_model_config(cfg.model, cfg.data.image_size, spec).train()
    loss = VQGANLoss(cfg.loss)
    opt = build_adam(tok.parameters(), lr=1e-4)

    def step(batch):
        inputs = text.inputs(batch["caption"], torch.device("cpu")) if text is not None else None
        out = tok(batch["image"], inputs)
        g = loss.generator_loss(batch["image"], out.reconstruction, out.losses["vq"], 0, tok.last_layer_weight())
        total = g["total"] + out.losses.get("align", 0.0)
        total.backward()
        opt.step()
        opt.zero_grad()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/tokenizer/vqgan_shapes.yaml")
    p.add_argument("--overlay", default="configs/lgvq/shapes.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. lgvq.visual_width=64")
    args = p.parse_args()
    cfg = load_config(TokenizerRunConfig, [args.config, args.overlay], args.overrides)
    cfg.data.num_train = 512
    dataset = build_dataset(cfg.data, "train", require_captions=True)
    text = AlignmentText(cfg.lgvq)
    text.cache.precompute(dataset.all_captions(), progress=False)
    plain, aligned = make_step(cfg, None), make_step(cfg, text)
    batches = train_stream(dataset, cfg.data, cfg.train.batch_size, seed=0)
    medians = side_by_side({"plain": plain, "lgvq": aligned}, rounds=args.steps, warmup=args.warmup,
                           inputs=lambda i: (next(batches),))
    p_med, l_med = medians["plain"], medians["lgvq"]
    print(f"config {args.config} + {args.overlay} {' '.join(args.overrides)}, batch {cfg.train.batch_size}, threads {torch.get_num_threads()}")
    print(f"plain VQ-GAN step  {1000 * p_med:8.1f} ms (median of {args.steps})")
    print(f"LG-VQ step         {1000 * l_med:8.1f} ms")
    print(f"ratio LG-VQ / plain: {l_med / p_med:.2f}  (target <= 1.25)")


if __name__ == "__main__":
    main()
