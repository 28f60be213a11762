"""Prior throughput on a GPU: training tokens/s and model FLOPs utilisation (MFU) in bf16 for a
~100M-parameter text-to-image prior, and sampling images/s (KV cache, guidance in one doubled
batch, then VQ decoding with the papers' 256 px f = 16 tokenizer).

    python benchmarks/prior_gpu.py [--dim 768 --depth 14 --heads 12] [--batch 64] [--compile]
                                   [--sample-batches 16,64,256] [--peak-tflops 989]

Models are randomly initialised: speed does not depend on the weights. Training runs the real
step (PriorTransformer.loss, fused Adam, bf16 autocast over fp32 weights as accelerate's
mixed_precision=bf16 does). MFU counts the model's matmul FLOPs the PaLM way: 6 x (matmul
parameters) per token, plus 12 x layers x width x sequence length per token for attention (the
causal half that flash attention skips is still counted, as everyone counts it), over the
card's dense bf16 peak (--peak-tflops; H100 SXM 989). A bf16 8192^3 matmul is timed in the same
run as the ceiling actually reachable.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch import nn

from lgvq.priors.model import Condition, PriorTransformer, prior_args
from lgvq.priors.sampling import generate
from lgvq.tokenizers.model import VQTokenizer
from lgvq.tokenizers.quantizers.config import quantizer_dict
from lgvq.training.optim import build_adam

TEXT_WIDTH, TEXT_LENGTH = 384, 32  # MiniLM features, prompts of up to 32 WordPiece tokens


def cuda_seconds(fn, repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn() over repeats, timed with CUDA events after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def matmul_ceiling(device) -> float:
    """TFLOP/s of a bf16 8192^3 matrix product on random data."""
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * 8192**3 / cuda_seconds(lambda: a @ b, repeats=20) / 1e12


def text_condition(b: int, device) -> Condition:
    return Condition(text=torch.randn(b, TEXT_LENGTH, TEXT_WIDTH, device=device),
                     text_mask=torch.ones(b, TEXT_LENGTH, dtype=torch.bool, device=device))


def matmul_params(prior: PriorTransformer) -> int:
    """Weights of the Linear layers every sequence position passes through (blocks and logits)."""
    return sum(m.weight.numel() for m in prior.net.modules() if isinstance(m, nn.Linear))


def training_flops_per_token(prior: PriorTransformer, seq: int) -> float:
    c = prior.config
    return 6 * matmul_params(prior) + 12 * c.depth * c.dim * seq


def train_throughput(prior: PriorTransformer, batch: int, repeats: int, compiled: bool, device) -> dict:
    prior.train()
    opt = build_adam(prior.parameters(), lr=1e-4, betas=(0.9, 0.95))
    tokens = torch.randint(0, prior.config.vocab_size, (batch, prior.config.seq_len), device=device)
    cond = text_condition(batch, device)
    loss_fn = torch.compile(prior.loss) if compiled else prior.loss

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = loss_fn(tokens, cond)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = cuda_seconds(step, repeats, warmup=5 if compiled else 3)
    seq = prior.config.seq_len + prior.prefix_length - 1  # the positions the network runs over
    return {"step_ms": seconds * 1e3, "tokens_per_s": batch * seq / seconds,
            "image_tokens_per_s": batch * prior.config.seq_len / seconds,
            "tflops": batch * seq * training_flops_per_token(prior, seq) / seconds / 1e12,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


# how the sampler decodes: x-transformers' growing KV cache, the static cache, the static cache
# with its step compiled and replayed as a CUDA graph (lgvq/priors/static_cache.py)
DECODERS = {"kv cache": {}, "static cache": {"static_cache": True},
            "static + CUDA graph": {"static_cache": True, "compile_step": True}}


def sample_throughput(prior: PriorTransformer, tok: VQTokenizer, batch: int, bf16: bool, device,
                      decoder: str = "kv cache") -> dict:
    cond = text_condition(batch, device)
    gen = torch.Generator(device).manual_seed(0)
    autocast = torch.autocast("cuda", torch.bfloat16) if bf16 else contextlib.nullcontext()
    h, w = tok.token_shape

    def sample_only():
        with autocast:
            return generate(prior, cond, temperature=1.0, top_k=100, cfg_scale=3.0, generator=gen,
                            **DECODERS[decoder])

    def sample_and_decode():
        tokens = sample_only()
        with torch.no_grad(), autocast:
            return tok.decode(tokens.reshape(batch, h, w))

    out = {}
    for name, fn in (("sample", sample_only), ("sample+decode", sample_and_decode)):
        seconds = cuda_seconds(fn, repeats=3, warmup=1)
        out[name] = batch / seconds
    return out


def cache_check(prior: PriorTransformer, device) -> str:
    """Cached against uncached greedy decoding in fp32 (TF32 off) on the GPU. With random weights
    the logits are near ties, so a rounding-order difference can flip one argmax; the logit gap
    is then reported up to that step."""
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cond = text_condition(4, device)
        a, la = generate(prior, cond, temperature=0, cfg_scale=3.0, use_cache=True, return_logits=True)
        b, lb = generate(prior, cond, temperature=0, cfg_scale=3.0, use_cache=False, return_logits=True)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = True
    differs = (a != b).any(0)
    first = int(differs.nonzero()[0]) if differs.any() else a.shape[1]
    gap = (la[:, :first + 1] - lb[:, :first + 1]).abs().max().item()
    if first == a.shape[1]:
        return f"greedy tokens identical over {first} steps, max logit gap {gap:.1e}"
    return f"greedy tokens identical for {first} of {a.shape[1]} steps, max logit gap up to there {gap:.1e}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--depth", type=int, default=14)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--batch", type=int, default=64, help="training sequences per step")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    p.add_argument("--sample-batches", default="16,64,256", help="images sampled at once, comma-separated")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the card's dense bf16 peak")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("prior_gpu.py measures a CUDA GPU; none is visible (use prior_speed.py on a CPU)")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    # the papers' stage one: 256 px, f = 16, 16 x 16 tokens, 1024 codes
    tok = VQTokenizer(resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                      z_channels=256, embed_dim=256,
                      quantizer_config=quantizer_dict(codebook_size=1024)).to(device).eval()
    h, w = tok.token_shape
    torch.manual_seed(0)
    prior = PriorTransformer(prior_args(vocab_size=tok.vocab_size, seq_len=h * w, conditioning="text",
                                        text_width=TEXT_WIDTH, text_length=TEXT_LENGTH, dim=args.dim,
                                        depth=args.depth, heads=args.heads)).to(device)
    n_params = sum(q.numel() for q in prior.parameters())
    ceiling = matmul_ceiling(device)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; prior {n_params / 1e6:.1f}M parameters "
          f"(dim {args.dim} x {args.depth} layers, {args.heads} heads), {h * w} image tokens + "
          f"{prior.prefix_length} prefix; bf16 8192^3 matmul {ceiling:.0f} TFLOP/s")

    rows = [("eager", False)] + ([("torch.compile", True)] if args.compile else [])
    for name, compiled in rows:
        r = train_throughput(prior, args.batch, args.repeats, compiled, device)
        print(f"train bf16 {name:<13} batch {args.batch}: {r['step_ms']:.1f} ms/step, "
              f"{r['tokens_per_s'] / 1e3:.0f}k tokens/s ({r['image_tokens_per_s'] / 1e3:.0f}k image tokens/s), "
              f"{r['tflops']:.0f} TFLOP/s = MFU {r['tflops'] / args.peak_tflops:.1%} of {args.peak_tflops:.0f} "
              f"({r['tflops'] / ceiling:.1%} of the measured matmul), peak {r['peak_gib']:.1f} GiB")

    prior.eval()
    print(f"fp32 KV cache vs recomputation on the GPU: {cache_check(prior, device)}")
    for batch in (int(b) for b in args.sample_batches.split(",")):
        for bf16 in (False, True):
            for decoder in DECODERS:
                r = sample_throughput(prior, tok, batch, bf16, device, decoder)
                print(f"sample {'bf16' if bf16 else 'fp32'} batch {batch:>3} (cfg 3, top-k 100, {decoder}): "
                      f"{r['sample']:.1f} images/s tokens only, {r['sample+decode']:.1f} images/s with decoding")


if __name__ == "__main__":
    main()
