"""`lgvq demo`: a local Gradio page to try trained runs (the optional `demo` extra).

    demo = build_demo(runs_of("runs/pipeline"))      # or DemoRuns(prior=..., captioner=..., vqa=...)
    demo.launch(server_name="127.0.0.1")

Tabs: text to image (on shapes each image marked by the scorer; a link with `?prompt=...` fills
the prompt and generates at once), caption, ask (VQA), complete, and tokens (the code grid over the
image, the reconstruction beside it, each position's ids and, for VQCT tokenizers, their words). The models load once, when the
page is built; Gradio runs each request in its thread pool. A user error (an empty prompt, a run
of the wrong kind) is shown on the page in the words the CLI uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from lgvq.errors import LgvqError, UsageError
from lgvq.runs import PipelineDir, RunDir


@dataclass
class DemoRuns:
    """The runs the page uses; any may be missing (its tabs then say so)."""

    prior: Path | None = None
    captioner: Path | None = None
    vqa: Path | None = None
    tokenizer: Path | None = None  # a tokenizer model folder (default: the prior's or a head's copy)


def runs_of(pipeline: str | Path) -> DemoRuns:
    """The runs of a `scripts/run_pipeline.sh` output folder."""
    p = PipelineDir(Path(pipeline))
    found = {name: run.root for name, run in (("prior", p.prior), ("captioner", p.captioner), ("vqa", p.vqa))
             if run.model.is_dir()}
    tokenizer = p.tokenizer.model if p.tokenizer.model.is_dir() else None
    if not found and tokenizer is None:
        raise UsageError(f"{pipeline} holds no trained run (expected prior/, captioner/, vqa/ or tokenizer/ "
                         f"with a model/ folder)")
    return DemoRuns(**found, tokenizer=tokenizer)


def user_errors(fn):
    """Show a user error on the page (gr.Error) in the CLI's words; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LgvqError as e:
            raise gr.Error(str(e)) from e
    return wrapped


class DemoModels:
    """Everything the page needs, loaded once."""

    def __init__(self, runs: DemoRuns, device: str | torch.device = "cpu"):
        from lgvq.api.heads import load_head
        from lgvq.downstream.captioning import CaptionHead
        from lgvq.downstream.vqa import VQAHead
        from lgvq.pipelines import load_pipeline
        from lgvq.tokenizers.model import VQTokenizer

        self.pipe = load_pipeline(runs.prior, device=device) if runs.prior else None
        self.captioner = load_head(runs.captioner, CaptionHead) if runs.captioner else None
        self.vqa = load_head(runs.vqa, VQAHead) if runs.vqa else None
        if runs.tokenizer:
            self.tokenizer = VQTokenizer.from_pretrained(runs.tokenizer).eval()
        elif self.pipe is not None:
            self.tokenizer = self.pipe.tokenizer
        else:
            self.tokenizer = next((t for _, t in filter(None, (self.captioner, self.vqa))), None)
        self.scorer = self._scorer(runs.prior) if runs.prior else None

    @staticmethod
    def _scorer(prior_run: Path):
        """The prior's data scorer (shapes), from the store it was trained on; None elsewhere."""
        from lgvq.config import load_config
        from lgvq.data.code_store import CodeStore
        from lgvq.data.datasets import build_dataset
        from lgvq.priors.config import PriorRunConfig
        from lgvq.runs import StoreDir

        run = RunDir.of(prior_run)
        if not run.config.is_file():
            return None
        split = StoreDir(Path(load_config(PriorRunConfig, run.config).store)).split("validation")
        if not (split / "store.json").is_file():
            return None
        return build_dataset(CodeStore(split).data_config(), "validation").scorer()

    def need(self, what: str):
        model = {"prior": self.pipe, "captioner": self.captioner, "vqa": self.vqa, "tokenizer": self.tokenizer}[what]
        if model is None:
            raise UsageError(f"this page was started without a {what} run; give lgvq demo --{what} RUN "
                             f"(or --run PIPELINE_DIR)")
        return model

    # -- what the tabs call ---------------------------------------------------------------------
    def generate(self, prompt: str, num_images: int, cfg_scale: float, temperature: float, top_k: int,
                 top_p: float, seed: int, progress=gr.Progress(track_tqdm=True)) -> list[tuple[Image.Image, str]]:
        pipe = self.need("prior")
        if pipe.prior.config.conditioning != "text":
            raise UsageError(f"this prior is {pipe.prior.config.conditioning}-conditioned; the page's text to "
                             f"image tab needs a text-to-image prior")
        images = pipe(prompt, num_images=int(num_images), seed=int(seed), cfg_scale=cfg_scale,
                      temperature=temperature, top_k=int(top_k), top_p=top_p)
        return [(im, self.verdict(im, prompt)) for im in images]

    def verdict(self, image: Image.Image, prompt: str) -> str:
        if self.scorer is None or not self.scorer.applies_to(prompt):
            return ""
        ok, reason = self.scorer.score(np.asarray(image.convert("RGB")), prompt)
        return "faithful" if ok else f"not faithful: {reason}"

    def codes(self, image: Image.Image, tokenizer) -> torch.Tensor:
        from lgvq.images import load_image

        if image is None:
            raise UsageError("give an image (upload one, or use a generated one)")
        with torch.no_grad():
            return tokenizer.encode(load_image(image, tokenizer.config.resolution)[None])

    def caption(self, image: Image.Image, beams: int) -> str:
        head, tokenizer = self.need("captioner")
        return head.generate(self.codes(image, tokenizer).reshape(1, -1), beams=int(beams))[0]

    def answer(self, image: Image.Image, question: str) -> str:
        head, tokenizer = self.need("vqa")
        if not question or not question.strip():
            raise UsageError("empty question: ask something about the image, e.g. 'what colour is the circle?'")
        return head.answer(self.codes(image, tokenizer).reshape(1, -1), [question])[0]

    def complete(self, image: Image.Image, keep_top: float, prompt: str, num_images: int, seed: int,
                 progress=gr.Progress(track_tqdm=True)) -> list[Image.Image]:
        from lgvq.priors.model import Condition

        pipe = self.need("prior")
        if image is None:
            raise UsageError("give an image to complete")
        cond = None
        if pipe.prior.config.conditioning == "text":
            if not prompt or not prompt.strip():
                raise UsageError("this prior is text-conditional: give the prompt the completion should follow")
            one = pipe.text_condition([prompt])
            n = int(num_images)
            cond = Condition(text=one.text.expand(n, -1, -1), text_mask=one.text_mask.expand(n, -1))
        return pipe.complete(image, keep_top=keep_top, num_images=int(num_images), seed=int(seed), condition=cond)

    def tokens(self, image: Image.Image) -> tuple[Image.Image, Image.Image, list[list]]:
        """The image with its code grid and ids drawn over it, the reconstruction from the ids, and a
        table of each position's ids (and, for VQCT tokenizers, the words they are)."""
        tokenizer = self.need("tokenizer")
        ids = self.codes(image, tokenizer)[0]  # (h, w) or (h, w, k)
        with torch.no_grad():
            rec = tokenizer.decode(ids[None])
        from lgvq.data.transforms import to_uint8
        from lgvq.images import load_image

        original = Image.fromarray(to_uint8(load_image(image, tokenizer.config.resolution)[None])[0])
        words = code_words(getattr(tokenizer.config, "quantizer_config", None) or {})
        per_position = ids.reshape(ids.shape[0], ids.shape[1], -1).tolist()
        table = [[i, j, " ".join(map(str, codes)), " ".join(words[c] for c in codes) if words else ""]
                 for i, row in enumerate(per_position) for j, codes in enumerate(row)]
        return (draw_code_grid(original, ids), Image.fromarray(to_uint8(rec)[0]).resize((512, 512), Image.NEAREST),
                table)


def code_words(quantizer_config: dict) -> list[str] | None:
    """The word of each code id for a VQCT tokenizer whose vocabulary folder is still there
    (adjectives, then nouns: the ids' order); None for other tokenizers."""
    from lgvq.text.vocab import Vocabulary

    folder = (quantizer_config.get("vqct") or {}).get("vocab")
    if quantizer_config.get("kind") != "vqct" or not folder or not (Path(folder) / "vocab.json").is_file():
        return None
    vocab = Vocabulary.load(folder)
    return vocab.adjectives + vocab.nouns


def draw_code_grid(image: Image.Image, ids: torch.Tensor, size: int = 512) -> Image.Image:
    """`image` enlarged to `size`, with the token grid and each position's first code id."""
    h, w = ids.shape[:2]
    big = image.convert("RGB").resize((size, size), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    for i in range(1, h):
        draw.line([(0, i * size / h), (size, i * size / h)], fill=(90, 90, 90))
    for j in range(1, w):
        draw.line([(j * size / w, 0), (j * size / w, size)], fill=(90, 90, 90))
    first = ids if ids.dim() == 2 else ids[..., 0]
    for i in range(h):
        for j in range(w):
            draw.text((j * size / w + 2, i * size / h + 1), str(int(first[i, j])), fill=(255, 255, 0))
    return big


def build_demo(runs: DemoRuns, device: str | torch.device = "cpu"):
    """The Gradio Blocks app; each tab's button is also an API endpoint (/generate, /caption,
    /answer, /complete, /tokens) for gradio_client."""
    models = DemoModels(runs, device)
    text_prior = models.pipe is not None and models.pipe.prior.config.conditioning == "text"
    d = models.pipe.defaults if models.pipe is not None else {}
    with gr.Blocks(title="lgvq demo") as demo:
        gr.Markdown("# lgvq demo\n" + ", ".join(f"{k}: `{v}`" for k, v in vars(runs).items() if v))
        with gr.Tab("Text to image"):
            prompt = gr.Textbox(label="prompt", value="a large red circle above a small blue square")
            with gr.Row():
                num_images = gr.Slider(1, 16, value=4, step=1, label="images")
                cfg = gr.Slider(0, 8, value=d.get("cfg_scale", 1.5), step=0.25, label="guidance")
                temperature = gr.Slider(0, 2, value=d.get("temperature", 1.0), step=0.05, label="temperature")
                top_k = gr.Number(value=d.get("top_k", 0), precision=0, label="top-k (0: off)")
                top_p = gr.Slider(0.05, 1, value=d.get("top_p", 1.0), step=0.05, label="top-p (1: off)")
                seed = gr.Number(value=0, precision=0, label="seed")
            go = gr.Button("Generate", variant="primary", interactive=text_prior)
            gallery = gr.Gallery(label="samples (caption: the scorer's verdict on shapes)", columns=4, format="png")
            go.click(user_errors(models.generate), [prompt, num_images, cfg, temperature, top_k, top_p, seed],
                     gallery, api_name="generate")

            def from_link(request: gr.Request, progress=gr.Progress(track_tqdm=True)):
                """A link with ?prompt=... fills the prompt and generates at once (a link to share)."""
                given = request.query_params.get("prompt") if request is not None else None
                if not given or not text_prior:
                    return gr.update(), gr.update()
                return given, user_errors(models.generate)(given, 4, d["cfg_scale"], d["temperature"], d["top_k"],
                                                           d["top_p"], 0)
            demo.load(from_link, None, [prompt, gallery])
        with gr.Tab("Caption"):
            cap_image = gr.Image(type="pil", label="image")
            beams = gr.Slider(1, 5, value=3, step=1, label="beams")
            cap_out = gr.Textbox(label="caption")
            gr.Button("Caption", variant="primary").click(user_errors(models.caption), [cap_image, beams], cap_out,
                                                         api_name="caption")
        with gr.Tab("Ask"):
            vqa_image = gr.Image(type="pil", label="image")
            question = gr.Textbox(label="question", value="what colour is the circle?")
            answer = gr.Textbox(label="answer")
            gr.Button("Ask", variant="primary").click(user_errors(models.answer), [vqa_image, question], answer,
                                                     api_name="answer")
        with gr.Tab("Complete"):
            comp_image = gr.Image(type="pil", label="image")
            keep = gr.Slider(0, 0.9, value=0.5, step=0.05, label="fraction of token rows kept")
            comp_prompt = gr.Textbox(label="prompt (text priors)", value="a large red circle")
            comp_n = gr.Slider(1, 8, value=4, step=1, label="completions")
            comp_seed = gr.Number(value=0, precision=0, label="seed")
            completions = gr.Gallery(label="completions", columns=4, format="png")
            gr.Button("Complete", variant="primary").click(
                user_errors(models.complete), [comp_image, keep, comp_prompt, comp_n, comp_seed], completions,
                api_name="complete")
        with gr.Tab("Tokens"):
            tok_image = gr.Image(type="pil", label="image")
            with gr.Row():
                grid = gr.Image(type="pil", label="code grid (first code id of each position)", format="png")
                rec = gr.Image(type="pil", label="reconstruction from the ids", format="png")
            table = gr.Dataframe(headers=["row", "column", "code ids", "words (VQCT tokenizers)"],
                                 label="codes of each position")
            gr.Button("Show tokens", variant="primary").click(user_errors(models.tokens), tok_image,
                                                             [grid, rec, table], api_name="tokens")
    return demo
