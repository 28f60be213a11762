"""Time of an LG-VQ training step over a plain VQ-GAN step, measured side by side.

    python benchmarks/alignment_overhead.py [--config configs/tokenizer/vqgan_shapes.yaml]
                                            [--overlay configs/lgvq/shapes.yaml] [--parts]

Both tokenizers share the architecture; the LG-VQ one adds the alignment modules and losses.
Text features are cached before timing (as in training, where every caption is encoded once),
and the two steps alternate so machine noise hits both alike. Target: ratio <= 1.25.

`--parts` then times the alignment modules alone (forward and backward from the tokenizer's
codes), side by side: with all losses, with each of L_mtp, L_ras and L_gsa left out (its share is
the difference), and the visual token encoder by itself.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from timing import side_by_side

from lgvq.alignment import build_alignment
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


def alignment_parts(cfg: TokenizerRunConfig, text: AlignmentText, batches, rounds: int, warmup: int
                    ) -> dict[str, float]:
    """Median seconds of the alignment modules' forward and backward on one batch's codes, whole
    and with each loss left out; `visual encoder` is Z_vt's encoder alone (backward from a mean)."""
    torch.manual_seed(0)
    tok = VQTokenizer.from_model_config(cfg.model, cfg.data.image_size)  # only to encode one batch
    with torch.no_grad():
        quantized = tok.quantizer.embed(tok.encode(next(batches)["image"]))  # (B, C, h, w)
    spec = text.alignment_spec()
    without = {"all losses": {}, "without L_mtp": {"mtp_weight": 0.0}, "without L_ras": {"ras_weight": 0.0},
               "without L_gsa": {"gsa_weight": 0.0}}
    aligners = {name: build_alignment(spec | {"config": dataclasses.asdict(dataclasses.replace(cfg.lgvq, **off))},
                                      quantized.shape[1], tok.token_shape).train()
                for name, off in without.items()}

    def losses(aligner):
        def step(batch):
            codes = quantized.clone().requires_grad_()
            aligner(codes, **text.inputs(batch["caption"], torch.device("cpu")))["align"].backward()
        return step

    aligned = quantized[:cfg.lgvq.images_per_batch or len(quantized)]  # the images the losses see

    def visual_encoder(batch):
        aligners["all losses"].visual.hidden(aligned.clone().requires_grad_()).mean().backward()

    steps = {name: losses(aligner) for name, aligner in aligners.items()} | {"visual encoder": visual_encoder}
    return side_by_side(steps, rounds=rounds, warmup=warmup, inputs=lambda i: (next(batches),))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/tokenizer/vqgan_shapes.yaml")
    p.add_argument("--overlay", default="configs/lgvq/shapes.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--parts", action="store_true",
                   help="also time the alignment modules alone: all losses, each left out, the visual encoder")
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
    print(f"config {args.config} + {args.overlay} {' '.join(args.overrides)}, batch {cfg.train.batch_size}, "
          f"threads {torch.get_num_threads()}")
    print(f"plain VQ-GAN step  {1000 * p_med:8.1f} ms (median of {args.steps})")
    print(f"LG-VQ step         {1000 * l_med:8.1f} ms")
    print(f"ratio LG-VQ / plain: {l_med / p_med:.2f}  (target <= 1.25)")
    if args.parts:
        parts = alignment_parts(cfg, text, batches, args.steps, args.warmup)
        whole = parts["all losses"]
        print("alignment modules alone, forward and backward (median):")
        for name, seconds in parts.items():
            share = f"  (that part: {1000 * (whole - seconds):6.1f} ms)" if name.startswith("without") else ""
            print(f"  {name:16s} {1000 * seconds:8.1f} ms{share}")


if __name__ == "__main__":
    main()
