"""The GPU path measured in one go: prior training (tokens/s, MFU, eager and compiled, the largest
batch that fits), sampling (images/s and latency of each decoder; time outside the model), tokenizer
training and encoding, and the main job's GPU preset (`scripts/run_pipeline.sh --preset gpu`: its
stage minutes and the numbers it reached), with the environment and each part's peak memory.
Sized to finish in under 8 minutes on one H100 / H200 (the pipeline stops at --pipeline-timeout).

    python benchmarks/gpu_suite.py [--out gpu_suite.json] [--parts env,prior,sampling,tokenizer,pipeline]
                                   [--pipeline-timeout 300] [--peak-tflops 989]
    python benchmarks/gpu_suite.py --smoke        # toy sizes on the CPU, seconds (the test suite runs it)

Models are randomly initialised (speed does not depend on the weights); LPIPS runs on a randomly
initialised VGG16 of the real shape when torchvision's weights are absent. MFU counts matmul FLOPs
the PaLM way (see benchmarks/prior_gpu.py) over the device's dense bf16 peak: 989 TFLOP/s for the
H100 SXM and the H200 (the same compute die), 756 for the H100 PCIe, 312 for the A100, or
--peak-tflops. A bf16 8192^3 matmul is timed as the ceiling actually reachable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_gpu import cuda_seconds, matmul_ceiling, text_condition, training_flops_per_token  # noqa: E402
from timing import median_time  # noqa: E402

from lgvq.config import load_config  # noqa: E402
from lgvq.priors.model import PriorTransformer, prior_args  # noqa: E402
from lgvq.priors.sampling import generate  # noqa: E402
from lgvq.tokenizers.config import TokenizerRunConfig  # noqa: E402
from lgvq.tokenizers.losses import VQGANLoss  # noqa: E402
from lgvq.tokenizers.model import VQTokenizer  # noqa: E402
from lgvq.training.optim import build_adam  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARTS = ("env", "prior", "sampling", "tokenizer", "pipeline")
# the pipeline's numbers the suite records (result.json's names): the GPU preset's targets are on these
HEADLINE = ("psnr", "faithful_one", "faithful_two", "cider_d", "vqa")
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0}


# -- timing and memory ------------------------------------------------------------------------------
def seconds(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of fn() (on a GPU with CUDA events: prior_gpu.cuda_seconds)."""
    if device.type == "cuda":
        return cuda_seconds(fn, repeats, warmup)
    return median_time(fn, device, warmup, repeats)


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict):
    """Writes the peak GiB allocated inside the block to into['peak_gib'] (GPU only)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    yield
    into["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


# -- sizes ------------------------------------------------------------------------------------------
def sizes(smoke: bool) -> dict:
    if smoke:
        return {"priors": {"large": dict(dim=32, depth=1, heads=2), "shapes preset": dict(dim=32, depth=1, heads=2,
                                                                                           text_layers=1)},
                "seq": 16, "text_length": 8, "batch": 4, "max_batch": 16, "repeats": 2,
                "sample_batches": (1, 4), "tokenizers": {"papers' f = 16": ["model.ch=16", "model.ch_mult=[1,2]",
                                                                             "model.z_channels=8", "model.embed_dim=8",
                                                                             "model.quantizer.codebook_size=32",
                                                                             "model.attn_resolutions=[]",
                                                                             "model.num_res_blocks=1",
                                                                             "model.norm_groups=8",
                                                                             "data.image_size=32", "loss.disc_ndf=8"],
                                                          "shapes preset": ["data.image_size=32", "model.ch=8",
                                                                            "model.quantizer.codebook_size=32"]},
                "tokenizer_batch": 2}
    return {"priors": {"large": dict(dim=768, depth=12, heads=12), "shapes preset": dict(dim=192, depth=4, heads=4,
                                                                                         text_layers=2)},
            "seq": 256, "text_length": 24, "batch": 64, "max_batch": 4096, "repeats": 10,
            "sample_batches": (1, 16, 128), "tokenizers": {"papers' f = 16": [], "shapes preset": []},
            "tokenizer_batch": 32}


def build_prior(shape: dict, seq: int, text_length: int, device) -> PriorTransformer:
    torch.manual_seed(0)
    side = int(seq**0.5)
    return PriorTransformer(prior_args(vocab_size=1024, seq_len=seq, conditioning="text", text_width=384,
                                       text_length=text_length, token_shape=(side, side), **shape)).to(device)


# -- parts ------------------------------------------------------------------------------------------
def environment(device: torch.device, peak: float | None, smoke: bool) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        env |= {"gpu": name, "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
                "cudnn": torch.backends.cudnn.version(), "bf16_matmul_tflops": matmul_ceiling(device)}
        if peak is None:
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    env["peak_bf16_tflops"] = peak
    env["mode"] = "smoke (toy sizes)" if smoke else "full"
    return env


def train_step_fn(prior: PriorTransformer, batch: int, device, compiled: bool):
    prior.train()
    opt = build_adam(prior.parameters(), lr=1e-4, betas=(0.9, 0.95))
    tokens = torch.randint(0, prior.config.vocab_size, (batch, prior.config.seq_len), device=device)
    cond = text_condition_sized(batch, prior, device)
    loss_fn = torch.compile(prior.loss) if compiled else prior.loss
    autocast = torch.autocast(device.type, torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step():
        with autocast:
            loss = loss_fn(tokens, cond)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def text_condition_sized(batch: int, prior: PriorTransformer, device):
    cond = text_condition(batch, device)
    length = prior.config.text_length
    return type(cond)(text=cond.text[:, :length], text_mask=cond.text_mask[:, :length])


def largest_batch(shape: dict, s: dict, device) -> int | None:
    """The largest power-of-two training batch (from s['batch']) whose step fits in memory."""
    if device.type != "cuda":
        return None
    fits, batch = None, s["batch"]
    while batch <= s["max_batch"]:
        prior = build_prior(shape, s["seq"], s["text_length"], device)
        try:
            train_step_fn(prior, batch, device, compiled=False)()
            torch.cuda.synchronize()
            fits, batch = batch, batch * 2
        except RuntimeError as e:
            if not out_of_memory(e):
                raise
            break
        finally:
            del prior
            torch.cuda.empty_cache()
    return fits


def prior_training(s: dict, device, peak: float | None, smoke: bool) -> dict:
    results = {}
    for name, shape in s["priors"].items():
        rows = {}
        for mode, compiled in (("eager", False), ("compiled", True)):
            if compiled and device.type != "cuda":
                continue  # torch.compile is timed on GPUs (on a CPU it gave nothing here: docs/results.md)
            prior = build_prior(shape, s["seq"], s["text_length"], device)
            row: dict = {}
            with peak_memory(device, row):
                sec = seconds(train_step_fn(prior, s["batch"], device, compiled), device, s["repeats"],
                              warmup=4 if compiled else 2)
            seq = prior.config.seq_len + prior.prefix_length - 1
            tflops = s["batch"] * seq * training_flops_per_token(prior, seq) / sec / 1e12
            row |= {"step_ms": sec * 1e3, "tokens_per_s": s["batch"] * seq / sec, "tflops": tflops,
                    "mfu": tflops / peak if peak else None}
            rows[mode] = row
            del prior
        params = sum(p.numel() for p in build_prior(shape, s["seq"], s["text_length"], "cpu").parameters())
        results[name] = {"parameters": params, "shape": shape, "batch": s["batch"], "sequence": s["seq"],
                         **rows, "largest_batch": largest_batch(shape, s, device)}
    return results


# the sampler's decoders (lgvq/priors/static_cache.py); the CUDA graph only on CUDA
DECODERS = {"kv cache": {"static_cache": False}, "static cache": {"static_cache": True},
            "static + CUDA graph": {"static_cache": True, "compile_step": True}}


def sampling(s: dict, device) -> dict:
    """Images/s and latency of each decoder, guidance in one doubled batch; for x-transformers'
    cache also the share of wall time spent outside the network's forward calls (Python,
    sampling, cache bookkeeping: what the static cache and its CUDA graph remove)."""
    prior = build_prior(s["priors"]["large"], s["seq"], s["text_length"], device).eval()
    inside = [0.0]
    run_network = prior.run_network

    def timed_network(*args, **kwargs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = run_network(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        inside[0] += time.perf_counter() - t
        return out

    results = {}
    autocast = torch.autocast(device.type, torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    decoders = {k: v for k, v in DECODERS.items() if device.type == "cuda" or not v.get("compile_step")}
    for batch in s["sample_batches"]:
        cond = text_condition_sized(batch, prior, device)
        gen = torch.Generator(device).manual_seed(0)
        rows: dict = {}
        for name, options in decoders.items():
            def sample(options=options):
                with autocast:
                    return generate(prior, cond, temperature=1.0, top_k=100, cfg_scale=3.0, generator=gen, **options)

            row: dict = {}
            with peak_memory(device, row):
                sec = seconds(sample, device, repeats=2, warmup=1)
            row |= {"images_per_s": batch / sec, "latency_s": sec}
            if not options["static_cache"]:  # a separate pass: the synchronisation would slow the timed one
                prior.run_network = timed_network
                inside[0] = 0.0
                t = time.perf_counter()
                sample()
                total = time.perf_counter() - t
                prior.run_network = run_network
                row["outside_model_share"] = max(0.0, 1 - inside[0] / total)
            rows[name] = row
        results[str(batch)] = rows
    return results


def random_vgg16_file(folder: Path) -> Path:
    """A VGG16 state dict of the real shape with random weights, for timing LPIPS offline."""
    from torchvision.models import vgg16

    path = folder / "vgg16-random.pth"
    torch.save(vgg16(weights=None).state_dict(), path)
    return path


def tokenizer(s: dict, device, tmp: Path) -> dict:
    results = {}
    for name, overrides in s["tokenizers"].items():
        if name.startswith("papers"):
            files = [REPO / "configs/replicate/vqgan_f16.yaml"]
            vgg = os.environ.get("LGVQ_VGG16") or None
            from lgvq.tokenizers.lpips import MissingWeightsError, find_vgg16_weights

            try:
                vgg = str(find_vgg16_weights(vgg))
                lpips_note = "real VGG16 weights"
            except MissingWeightsError:
                vgg, lpips_note = str(random_vgg16_file(tmp)), "randomly initialised VGG16 (weights absent)"
            overrides = [*overrides, f"loss.lpips_vgg_path={vgg}", "data.source=shapes", "data.path=null"]
        else:
            files, lpips_note = [REPO / "configs/tokenizer/vqgan_shapes.yaml"], "no LPIPS in this preset"
        cfg = load_config(TokenizerRunConfig, files, overrides)
        torch.manual_seed(0)
        tok = VQTokenizer.from_model_config(cfg.model, cfg.data.image_size).to(device).train()
        loss = VQGANLoss(cfg.loss).to(device)
        opt = build_adam(tok.parameters(), lr=1e-4, betas=(0.5, 0.9))
        batch = s["tokenizer_batch"]
        x = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size, device=device) * 2 - 1
        autocast = torch.autocast(device.type, torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

        def train_step():
            with autocast:
                out = tok(x)
                g = loss.generator_loss(x, out.reconstruction, out.losses["vq"], 0, tok.last_layer_weight())
            g["total"].backward()
            opt.step()
            opt.zero_grad()

        @torch.no_grad()
        def encode():
            with autocast:
                tok.encode(x)

        row: dict = {"image_size": cfg.data.image_size, "batch": batch, "lpips": lpips_note}
        with peak_memory(device, row):
            row["train_images_per_s"] = batch / seconds(train_step, device, s["repeats"])
            tok.eval()
            row["encode_images_per_s"] = batch / seconds(encode, device, s["repeats"])
        results[name] = row
    return results


def pipeline(device, timeout: float, smoke: bool, tmp: Path) -> dict:
    """`scripts/run_pipeline.sh --preset gpu` under a time limit: per-stage minutes, how far it got
    and the headline numbers it reached (the smoke run: the default preset's tokenizer stage)."""
    out = tmp / "pipeline"
    env = dict(os.environ)
    args = [str(REPO / "scripts" / "run_pipeline.sh"), "--out", str(out)]
    if not smoke:
        args += ["--preset", "gpu"]
    else:  # a toy tokenizer stage: the script's plumbing and its records, in seconds
        args += ["--stop-after", "tokenizer"]
        env["TOKENIZER_OVERRIDES"] = ("data.num_train=16 data.num_val=8 data.image_size=32 model.ch=8 "
                                      "model.quantizer.codebook_size=32 lgvq.visual_width=16 train.max_steps=2 "
                                      "train.batch_size=4 train.checkpoint_every=2 train.sample_every=0")
    start = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        status = "finished" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        tail = (proc.stderr or proc.stdout)[-1500:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        status, tail = f"stopped at the {timeout:.0f} s limit", ""
    done = sorted(p.stem for p in (out / ".stages").glob("*.done")) if (out / ".stages").is_dir() else []
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else {}
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if k in HEADLINE and v is not None}
    return {"status": status, "wall_minutes": (time.monotonic() - start) / 60, "stages_done": done,
            "stage_minutes": {k: v / 60 for k, v in timings.items()}, "metrics": metrics, "error_tail": tail}


# -- report -------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    lines = []
    env = results.get("env")
    if env:
        lines.append(f"{env.get('gpu', 'CPU')} | torch {env['torch']} | CUDA {env['cuda']} | "
                     f"bf16 peak {fmt(env['peak_bf16_tflops'], '.0f')} TFLOP/s | {env['mode']}")
    for name, r in (results.get("prior") or {}).items():
        for mode in ("eager", "compiled"):
            if mode in r:
                m = r[mode]
                lines.append(f"prior {name} ({r['parameters'] / 1e6:.1f}M) train {mode:<8} batch {r['batch']}: "
                             f"{m['step_ms']:.1f} ms/step, {m['tokens_per_s'] / 1e3:.1f}k tokens/s, "
                             f"{m['tflops']:.2f} TFLOP/s, MFU {fmt(m['mfu'], '.1%')}, "
                             f"peak {fmt(m['peak_gib'], '.1f')} GiB")
        lines.append(f"prior {name} largest batch that fits: {fmt(r['largest_batch'], 'd')}")
    for batch, rows in (results.get("sampling") or {}).items():
        for decoder, r in rows.items():
            outside = f", {r['outside_model_share']:.0%} of the time outside the model" \
                if "outside_model_share" in r else ""
            lines.append(f"sampling large prior batch {batch:>3}, {decoder}: {r['images_per_s']:.2f} images/s, "
                         f"{r['latency_s']:.2f} s per batch{outside}, peak {fmt(r['peak_gib'], '.1f')} GiB")
    for name, r in (results.get("tokenizer") or {}).items():
        lines.append(f"tokenizer {name} ({r['image_size']} px, batch {r['batch']}, {r['lpips']}): train "
                     f"{r['train_images_per_s']:.1f} images/s, encode {r['encode_images_per_s']:.1f} images/s, "
                     f"peak {fmt(r['peak_gib'], '.1f')} GiB")
    p = results.get("pipeline")
    if p:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in p["stage_minutes"].items()) or "none recorded"
        lines.append(f"pipeline: {p['status']} after {p['wall_minutes']:.1f} min; stage minutes: {stages}")
        if p.get("metrics"):
            lines.append("pipeline reached: " + ", ".join(f"{k} {v:.4g}" for k, v in p["metrics"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU, to check the script itself")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    p.add_argument("--out", default="gpu_suite.json")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: by device name)")
    p.add_argument("--pipeline-timeout", type=float, default=300.0, help="seconds for the GPU preset's pipeline")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not args.smoke and not torch.cuda.is_available():
        p.error("no CUDA GPU is visible; --smoke runs toy sizes on the CPU")
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    s = sizes(args.smoke)
    results: dict = {"env": environment(device, args.peak_tflops, args.smoke)}
    peak = results["env"]["peak_bf16_tflops"]
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            started = time.perf_counter()
            if part == "prior":
                results["prior"] = prior_training(s, device, peak, args.smoke)
            elif part == "sampling":
                results["sampling"] = sampling(s, device)
            elif part == "tokenizer":
                results["tokenizer"] = tokenizer(s, device, Path(tmp))
            elif part == "pipeline":
                results["pipeline"] = pipeline(device, args.pipeline_timeout, args.smoke, Path(tmp))
            if part != "env":
                results.setdefault("part_seconds", {})[part] = time.perf_counter() - started
                print(f"[{part}: {results['part_seconds'][part]:.0f} s]", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
