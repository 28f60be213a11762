"""Stage-two speed ratios, each measured side by side in one run (alternating, median of repeats):

1. KV-cached sampling over full recomputation, at the default length and at 256 tokens (target >= 5x at 256)
2. guidance in one doubled batch over two separate passes (target >= 1.4x)
3. a prior training step reading the code store over one that encodes the images in the step (target >= 3x)
4. `model.group_size: 2` (2 x 2 codes per position) over 1: a training step and sampling, at the
   tokenizer's grid (target >= 2.5x for the step: a quarter of the image positions)
5. (`--parts static`) sampling over the static KV cache against x-transformers' growing cache

    python benchmarks/prior_speed.py [--tokenizer-config configs/tokenizer/vqgan_shapes.yaml]
                                     [--prior-config configs/prior/shapes_t2i.yaml] [--device cpu]
                                     [--parts cache,static,guidance,store,groups] [TOKENIZER_KEY=VALUE ...]

e.g. the third ratio with the papers' 256 px f = 16 tokenizer on shapes images:
    python benchmarks/prior_speed.py --parts store --tokenizer-config configs/replicate/vqgan_f16.yaml \
        data.source=shapes data.path=null

Models are randomly initialised at the configs' sizes: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

import timing
import torch

from lgvq.config import load_config
from lgvq.data.datasets import build_dataset
from lgvq.priors.args import PriorArgs, PriorData
from lgvq.priors.config import PriorRunConfig
from lgvq.priors.model import Condition, PriorTransformer, next_token_loss
from lgvq.priors.sampling import generate
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.model import VQTokenizer
from lgvq.training.optim import build_adam


def side_by_side(a, b, repeats: int, device) -> tuple[float, float]:
    """Median seconds of a and b, alternating so that machine noise hits both alike."""
    medians = timing.side_by_side({"a": a, "b": b}, rounds=repeats, warmup=1, device=device)
    return medians["a"], medians["b"]


def text_prior(pcfg: PriorRunConfig, seq_len: int, vocab: int, device, group_size: int = 1) -> PriorTransformer:
    torch.manual_seed(0)
    m = pcfg.model
    side = math.isqrt(seq_len)  # the benchmarked lengths are square grids
    data = PriorData(vocab_size=vocab, seq_len=seq_len, conditioning="text", text_width=384, text_length=16,
                     token_shape=(side, side))
    arch = replace(m.architecture(), group_size=group_size)
    return PriorTransformer(PriorArgs(data, arch)).to(device).eval()


def text_condition(b: int, device) -> Condition:
    return Condition(text=torch.randn(b, 16, 384, device=device), text_mask=torch.ones(b, 16, dtype=torch.bool,
                                                                                      device=device))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer-config", default="configs/tokenizer/vqgan_shapes.yaml")
    p.add_argument("--prior-config", default="configs/prior/shapes_t2i.yaml")
    p.add_argument("--batch", type=int, default=8, help="images sampled at once")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--parts", default="cache,guidance,store,groups", help="which ratios, comma-separated")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the tokenizer config")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"cache", "static", "guidance", "store", "groups"}:
        p.error(f"--parts takes cache, static, guidance, store and groups, not {args.parts!r}")
    device = torch.device(args.device)
    tcfg = load_config(TokenizerRunConfig, args.tokenizer_config, args.overrides)
    pcfg = load_config(PriorRunConfig, args.prior_config)
    tok = VQTokenizer.from_model_config(tcfg.model, tcfg.data.image_size).to(device)
    h, w = tok.token_shape
    vocab = tok.vocab_size
    cond = text_condition(args.batch, device)
    rows = []

    # 1. KV cache
    for n in dict.fromkeys([64, h * w, 256]) if "cache" in parts else ():
        prior = text_prior(pcfg, n, vocab, device)
        run = lambda cache: lambda: generate(prior, cond, temperature=0, cfg_scale=3.0, use_cache=cache)  # noqa
        cached, full = side_by_side(run(True), run(False), args.repeats, device)
        rows.append((f"KV cache over recomputation, {n} tokens", full / cached, "(target >= 5x at 256)"))

    # the static cache (preallocated, fixed shapes) against x-transformers' growing one
    if "static" in parts:
        prior = text_prior(pcfg, h * w, vocab, device)
        run = lambda static: lambda: generate(prior, cond, temperature=0, cfg_scale=3.0, static_cache=static)  # noqa
        static, growing = side_by_side(run(True), run(False), args.repeats, device)
        rows.append((f"static KV cache over x-transformers' cache, {h * w} tokens", growing / static, ""))

    # 2. guidance batching
    if "guidance" in parts:
        prior = text_prior(pcfg, h * w, vocab, device)
        run = lambda batch: lambda: generate(prior, cond, temperature=0, cfg_scale=3.0, guidance_batch=batch)
        one, two = side_by_side(run(True), run(False), args.repeats, device)
        rows.append(("guidance: doubled batch over two passes", two / one, "(target >= 1.4x)"))
    if "store" in parts:
        rows.append(store_ratio(tok, tcfg, pcfg, args.repeats, device))
    if "groups" in parts:
        rows += group_ratios(pcfg, h * w, vocab, cond, args.repeats, device)

    print(f"device {device}, {torch.get_num_threads()} threads, prior dim {pcfg.model.dim} x {pcfg.model.depth}, "
          f"{tcfg.data.image_size} px images, {h * w} positions x {tok.tokens_per_position} tokens, "
          f"batch {args.batch} (sampling) / {pcfg.train.batch_size} (training)")
    for name, ratio, target in rows:
        print(f"{name:<55} {ratio:6.2f}x  {target}")


def store_ratio(tok: VQTokenizer, tcfg: TokenizerRunConfig, pcfg: PriorRunConfig, repeats: int, device):
    """3. a prior training step reading stored tokens vs one that encodes its images first."""
    tcfg.data.num_train = pcfg.train.batch_size
    data = build_dataset(tcfg.data, "train")
    images = torch.stack([data[i]["image"] for i in range(pcfg.train.batch_size)]).to(device)
    tok.eval()
    with torch.no_grad():
        stored = tok.encode(images).reshape(images.shape[0], -1)
    prior = text_prior(pcfg, stored.shape[1], tok.vocab_size, device).train()
    opt = build_adam(prior.parameters(), lr=1e-4)
    bcond = text_condition(images.shape[0], device)

    def step(tokens_fn):
        def run():
            tokens = tokens_fn()
            next_token_loss(prior(tokens, bcond), tokens).backward()
            opt.step()
            opt.zero_grad()
        return run

    def encode_in_step():
        with torch.no_grad():
            return tok.encode(images).reshape(images.shape[0], -1)

    from_store, encoding = side_by_side(step(lambda: stored), step(encode_in_step), repeats * 3, device)
    return "training step: code store over encoding in the step", encoding / from_store, "(target >= 3x)"


def group_ratios(pcfg: PriorRunConfig, seq_len: int, vocab: int, cond: Condition, repeats: int, device):
    """4. group_size 2 over 1: a training step at the config's batch, and sampling (guided)."""
    b = pcfg.train.batch_size
    tokens = torch.randint(0, vocab, (b, seq_len), device=device)
    bcond = text_condition(b, device)
    priors = {g: text_prior(pcfg, seq_len, vocab, device, group_size=g).train() for g in (1, 2)}
    opts = {g: build_adam(prior.parameters(), lr=1e-4) for g, prior in priors.items()}

    def step(g):
        def run():
            priors[g](tokens, bcond, targets=tokens).backward()
            opts[g].step()
            opts[g].zero_grad()
        return run

    grouped, single = side_by_side(step(2), step(1), repeats * 3, device)
    sample = lambda g: lambda: generate(priors[g], cond, cfg_scale=1.5, generator=torch.Generator().manual_seed(0))
    grouped_sampling, single_sampling = side_by_side(sample(2), sample(1), repeats, device)
    return [("training step: group_size 2 over 1", single / grouped, "(target >= 2.5x)"),
            ("sampling: group_size 2 over 1", single_sampling / grouped_sampling, "")]


if __name__ == "__main__":
    main()
