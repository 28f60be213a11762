"""`lgvq demo`: a local Gradio page to try trained runs (the optional `demo` extra).

    demo = build_demo(runs_of("runs/pipeline"))      # or DemoRuns(prior=..., captioner=..., vqa=...)
    launch_demo(demo, host="127.0.0.1", port=7860)

Tabs: text to image (on shapes each image marked by the scorer; a link with `?prompt=...` fills
the prompt and generates at once), caption, ask (VQA), complete, and tokens (the code grid over the
image, the reconstruction beside it, each position's ids and their words: a VQCT tokenizer's
vocabulary, or an LG-VQ tokenizer's nearest words through its alignment modules).

The models load once, when the page is built. Requests queue: at most `concurrency` of them run
the models at a time (all tabs together), at most `MAX_QUEUE` wait, the rest are turned away. A
user error (an empty prompt, a bad number, a file that is not an image or is too large, a run of
the wrong kind) is shown on the page in the words the CLI uses, and the server keeps serving.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from lgvq.demo_caps import MAX_IMAGES, MAX_PIXELS, MAX_QUEUE, MAX_UPLOAD, default_concurrency
from lgvq.errors import LgvqError, UsageError
from lgvq.runs import PipelineDir, RunDir


@dataclass
class DemoRuns:
    """The runs the page uses; any may be missing (its tabs then say so)."""

    prior: Path | None = None
    captioner: Path | None = None
    vqa: Path | None = None
    tokenizer: Path | None = None  # a tokenizer model folder (default: the prior's or a head's copy)


def number(value, name: str) -> float:
    """A number from the page or a client (its range is checked where it is used, in the CLI's words)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None


def whole(value, name: str, low: int = 0, high: int = 2**31 - 1) -> int:
    """A whole number in low..high from the page or a client, or the error the CLI would give."""
    x = number(value, name)
    if not math.isfinite(x) or x != int(x) or not low <= x <= high:
        raise UsageError(f"{name} must be a whole number from {low} to {high}, not {value}")
    return int(x)


def count(value, name: str, top: int = MAX_IMAGES) -> int:
    """How many images (completions, beams) a request asks for: 1..top, this page's cap."""
    return whole(value, f"{name} (this page's cap is {top})", 1, top)


def unchecked(component):
    """The component's value reaches lgvq unchanged, so a client's out-of-range or non-number value
    gets lgvq's message (Gradio's own check would answer in its words). Set on the instance: a
    subclass of a Gradio component makes Gradio write a .pyi stub beside this module."""
    component.preprocess = lambda payload: payload
    return component


def image_upload(label: str) -> gr.Image:
    """An image input handed on as its file path, undecoded: lgvq reads the file itself, so a file
    that is not an image, is cut short or is too large gets lgvq's message, not Gradio's."""
    component = gr.Image(type="filepath", label=label)
    decode = component.preprocess

    def path_of(payload):
        if payload is not None and payload.path is not None and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return decode(payload)
    component.preprocess = path_of
    return component


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
        self.tokenizer_dir = runs.tokenizer
        self._nearest = None
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
        images = pipe(prompt, num_images=count(num_images, "images"), seed=whole(seed, "seed"),
                      cfg_scale=number(cfg_scale, "guidance"), temperature=number(temperature, "temperature"),
                      top_k=whole(top_k, "top-k"), top_p=number(top_p, "top-p"))
        return [(im, self.verdict(im, prompt)) for im in images]

    def verdict(self, image: Image.Image, prompt: str) -> str:
        if self.scorer is None or not self.scorer.applies_to(prompt):
            return ""
        ok, reason = self.scorer.score(np.asarray(image.convert("RGB")), prompt)
        return "faithful" if ok else f"not faithful: {reason}"

    def codes(self, image: str | Image.Image, tokenizer) -> torch.Tensor:
        if image is None:
            raise UsageError("give an image (upload one, or use a generated one)")
        with torch.no_grad():
            return tokenizer.encode(read_image(image, tokenizer.config.resolution)[None])

    def caption(self, image: Image.Image, beams: int) -> str:
        head, tokenizer = self.need("captioner")
        return head.generate(self.codes(image, tokenizer).reshape(1, -1), beams=count(beams, "beams", 5))[0]

    def answer(self, image: Image.Image, question: str) -> str:
        head, tokenizer = self.need("vqa")
        head.check_questions([question or ""])
        return head.answer(self.codes(image, tokenizer).reshape(1, -1), [question])[0]

    def complete(self, image: str | Image.Image, keep_top: float, prompt: str, num_images: int, seed: int,
                 progress=gr.Progress(track_tqdm=True)) -> list[Image.Image]:
        pipe = self.need("prior")
        if image is None:
            raise UsageError("give an image to complete")
        n = count(num_images, "completions")
        cond = None
        if pipe.prior.config.conditioning == "text":
            if not prompt or not prompt.strip():
                raise UsageError("this prior is text-conditional: give the prompt the completion should follow")
            cond = pipe.text_condition([prompt]).repeat(n)
        read_image(image, pipe.tokenizer.config.resolution)  # refuses a bad or huge file in lgvq's words
        return pipe.complete(image, keep_top=number(keep_top, "fraction of rows kept"), num_images=n, seed=whole(seed, "seed"), condition=cond)

    def tokens(self, image: str | Image.Image) -> tuple[Image.Image, Image.Image, list[list]]:
        """The image with its code grid and ids drawn over it, the reconstruction from the ids, and a
        table of each position's ids and their words (a VQCT tokenizer's vocabulary words, an
        LG-VQ tokenizer's nearest words through its alignment)."""
        from lgvq.data.transforms import to_uint8

        tokenizer = self.need("tokenizer")
        pixels = read_image(image, tokenizer.config.resolution)
        with torch.no_grad():
            ids = tokenizer.encode(pixels[None])[0]  # (h, w) or (h, w, k)
            rec = tokenizer.decode(ids[None])
        per_position = ids.reshape(ids.shape[0], ids.shape[1], -1).tolist()
        cells = [codes for row in per_position for codes in row]
        vocabulary = code_words(getattr(tokenizer.config, "quantizer_config", None) or {})
        if vocabulary is not None:
            words = [" ".join(vocabulary[c] for c in codes) for codes in cells]
        elif (nearest := self.nearest_words()) is not None:
            words = [" / ".join(near) for near in nearest(ids)]
        else:
            words = [""] * len(cells)
        w = ids.shape[1]
        table = [[n // w, n % w, " ".join(map(str, codes)), text] for n, (codes, text) in enumerate(zip(cells, words))]
        original = Image.fromarray(to_uint8(pixels[None])[0])
        return (draw_code_grid(original, ids), Image.fromarray(to_uint8(rec)[0]).resize((512, 512), Image.NEAREST),
                table)

    def nearest_words(self):
        """An LG-VQ tokenizer's nearest-words reader (built once), over its data's content words
        (or its captions' most frequent words); None for a tokenizer without alignment modules."""
        if getattr(self.tokenizer, "aligner", None) is None:
            return None
        if self._nearest is None:
            from lgvq.alignment.nearest_words import NearestWords, caption_vocabulary
            from lgvq.api.data import data_config_for
            from lgvq.data.datasets import build_dataset

            data = data_config_for(None, self.tokenizer_dir) if self.tokenizer_dir else None
            dataset = build_dataset(data, "validation") if data is not None else None
            words = sorted(dataset.content_words() or []) if dataset is not None else []
            if not words and dataset is not None:
                words = caption_vocabulary(dataset.all_captions())
            self._nearest = NearestWords(self.tokenizer, words) if words else False
        return self._nearest or None


def read_image(image: str | Image.Image, size: int) -> torch.Tensor:
    """An uploaded image for a model, (3, size, size); a file that is not an image, is cut short or
    has more than MAX_PIXELS pixels is refused in lgvq's words."""
    from lgvq.images import load_image

    return load_image(image, size, max_pixels=MAX_PIXELS)


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


def build_demo(runs: DemoRuns, device: str | torch.device = "cpu", concurrency: int | None = None):
    """The Gradio Blocks app; each tab's button is also an API endpoint (/generate, /caption,
    /answer, /complete, /tokens) for gradio_client. All endpoints share one concurrency limit
    (default: `default_concurrency()`); launch it with `launch_demo`, which sets the queue and the
    upload cap."""
    models = DemoModels(runs, device)
    text_prior = models.pipe is not None and models.pipe.prior.config.conditioning == "text"
    d = models.pipe.defaults if models.pipe is not None else {}
    queued = dict(concurrency_limit=concurrency or default_concurrency(), concurrency_id="models")
    with gr.Blocks(title="lgvq demo") as demo:
        gr.Markdown("# lgvq demo\n" + ", ".join(f"{k}: `{v}`" for k, v in vars(runs).items() if v))
        with gr.Tab("Text to image"):
            prompt = gr.Textbox(label="prompt", value="a large red circle above a small blue square")
            with gr.Row():
                num_images = unchecked(gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images"))
                cfg = unchecked(gr.Slider(0, 8, value=d.get("cfg_scale", 1.5), step=0.25, label="guidance"))
                temperature = unchecked(gr.Slider(0, 2, value=d.get("temperature", 1.0), step=0.05,
                                                  label="temperature (0: greedy)"))
                top_k = unchecked(gr.Number(value=d.get("top_k", 0), precision=0, label="top-k (0: off)"))
                top_p = unchecked(gr.Slider(0.05, 1, value=d.get("top_p", 1.0), step=0.05, label="top-p (1: off)"))
                seed = unchecked(gr.Number(value=0, precision=0, label="seed"))
            go = gr.Button("Generate", variant="primary", interactive=text_prior)
            gallery = gr.Gallery(label="samples (caption: the scorer's verdict on shapes)", columns=4, format="png")
            go.click(user_errors(models.generate), [prompt, num_images, cfg, temperature, top_k, top_p, seed],
                     gallery, api_name="generate", **queued)

            def from_link(request: gr.Request, progress=gr.Progress(track_tqdm=True)):
                """A link with ?prompt=... fills the prompt and generates at once (a link to share)."""
                given = request.query_params.get("prompt") if request is not None else None
                if not given or not text_prior:
                    return gr.update(), gr.update()
                return given, user_errors(models.generate)(given, 4, d["cfg_scale"], d["temperature"], d["top_k"],
                                                           d["top_p"], 0)
            demo.load(from_link, None, [prompt, gallery], **queued)
        with gr.Tab("Caption"):
            cap_image = image_upload("image")
            beams = unchecked(gr.Slider(1, 5, value=3, step=1, label="beams"))
            cap_out = gr.Textbox(label="caption")
            gr.Button("Caption", variant="primary").click(user_errors(models.caption), [cap_image, beams], cap_out,
                                                         api_name="caption", **queued)
        with gr.Tab("Ask"):
            vqa_image = image_upload("image")
            question = gr.Textbox(label="question", value="what colour is the circle?")
            answer = gr.Textbox(label="answer")
            gr.Button("Ask", variant="primary").click(user_errors(models.answer), [vqa_image, question], answer,
                                                     api_name="answer", **queued)
        with gr.Tab("Complete"):
            comp_image = image_upload("image")
            keep = unchecked(gr.Slider(0, 0.9, value=0.5, step=0.05, label="fraction of token rows kept"))
            comp_prompt = gr.Textbox(label="prompt (text priors)", value="a large red circle")
            comp_n = unchecked(gr.Slider(1, MAX_IMAGES, value=4, step=1, label="completions"))
            comp_seed = unchecked(gr.Number(value=0, precision=0, label="seed"))
            completions = gr.Gallery(label="completions", columns=4, format="png")
            gr.Button("Complete", variant="primary").click(
                user_errors(models.complete), [comp_image, keep, comp_prompt, comp_n, comp_seed], completions,
                api_name="complete", **queued)
        with gr.Tab("Tokens"):
            tok_image = image_upload("image")
            with gr.Row():
                grid = gr.Image(type="pil", label="code grid (first code id of each position)", format="png")
                rec = gr.Image(type="pil", label="reconstruction from the ids", format="png")
            table = gr.Dataframe(headers=["row", "column", "code ids", "words (VQCT: its words; LG-VQ: nearest)"],
                                 label="codes of each position")
            gr.Button("Show tokens", variant="primary").click(user_errors(models.tokens), tok_image,
                                                             [grid, rec, table], api_name="tokens", **queued)
    return demo


def launch_demo(demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **launch):
    """Start the page with its queue (at most MAX_QUEUE waiting) and upload cap (MAX_UPLOAD)."""
    return demo.queue(max_size=MAX_QUEUE).launch(server_name=host, server_port=port, share=share,
                                                 max_file_size=MAX_UPLOAD, show_error=True, **launch)
