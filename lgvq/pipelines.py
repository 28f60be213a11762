"""Load a trained prior run (tokenizer + prior + text-encoder reference) and sample in one call.

    from lgvq.pipelines import TextToImagePipeline
    pipe = TextToImagePipeline.from_pretrained("runs/prior_shapes")
    images = pipe("a red circle above a blue square", num_images=4, seed=0)   # list of PIL images

`ClassConditionalPipeline` takes class ids or names, `UnconditionalPipeline` just a count;
`load_pipeline(run_dir)` picks the right one. Every pipeline can also complete an image whose
top part is kept (`pipe.complete(image, keep_top=0.5)`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from lgvq.config import load_config
from lgvq.data.transforms import to_uint8
from lgvq.devices import resolve_device
from lgvq.errors import InputFileError, PromptError
from lgvq.images import load_image
from lgvq.priors.config import PriorRunConfig, SampleConfig
from lgvq.priors.model import Condition, PriorTransformer
from lgvq.priors.rerank import CaptionReranker
from lgvq.priors.sampling import generate
from lgvq.runs import RunDir, model_dir
from lgvq.tokenizers.model import VQTokenizer


class PriorPipeline:
    conditioning: str | None = None  # the prior conditioning this pipeline serves (None: any)

    def __init__(self, prior: PriorTransformer, tokenizer: VQTokenizer, sample_defaults: dict | None = None,
                 device: str | torch.device | None = None):
        if self.conditioning is not None and prior.config.conditioning != self.conditioning:
            raise PromptError(f"this prior is {prior.config.conditioning}-conditional; use "
                              f"{PIPELINES[prior.config.conditioning].__name__} (or load_pipeline)")
        self.device = resolve_device(device)
        self.prior = prior.to(self.device).eval()
        self.tokenizer = tokenizer.to(self.device).eval()
        self.defaults = asdict(SampleConfig()) | (sample_defaults or {})
        h, w = prior.config.token_shape
        if tuple(tokenizer.token_shape) != (h, w) or tokenizer.vocab_size != prior.config.vocab_size:
            raise PromptError(f"the tokenizer ({tokenizer.token_shape}, {tokenizer.vocab_size} codes) does not "
                              f"match the prior ({(h, w)}, {prior.config.vocab_size} codes)")
        self._text_encoder = None
        self._rerankers: dict = {}

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str | torch.device | None = None):
        """A prior run folder: RUN/model (prior), RUN/tokenizer, RUN/config.yaml (sampling defaults)."""
        run = RunDir.of(run_dir)
        prior = PriorTransformer.from_pretrained(model_dir(run_dir))
        tok_dir = run.tokenizer
        if not tok_dir.is_dir():
            raise InputFileError(f"no tokenizer beside the prior in {run.root} (expected {tok_dir})")
        tokenizer = VQTokenizer.from_pretrained(tok_dir)
        defaults = _sample_defaults(run)
        target = cls if cls is not PriorPipeline else PIPELINES[prior.config.conditioning]
        return target(prior, tokenizer, defaults, device)

    # -- shared machinery ----------------------------------------------------------------------
    def _generate(self, cond: Condition, seed: int | None, prompt_tokens: torch.Tensor | None = None,
                  progress: tqdm | bool = True, texts: list[str] | None = None, **overrides) -> list[Image.Image]:
        """Images for each row of `cond`, `batch_size` rows at a time. `progress`: a bar of tokens
        of its own (True), none (False), or the caller's bar to update (e.g. one over many calls).
        `texts`: each row's prompt, for re-ranking by a captioner (`rerank_with`)."""
        args = self.defaults | {k: v for k, v in overrides.items() if v is not None}
        batch_size = int(args.pop("batch_size"))
        if batch_size < 1:
            raise PromptError(f"batch_size must be >= 1, not {batch_size}")
        top_k = int(args["top_k"]) or None
        top_p = args["top_p"] if args["top_p"] < 1 else None
        best_of, best_of_hard = int(args.get("best_of", 1)), int(args.get("best_of_hard") or 0)
        hard_share = float(args.get("hard_share", 0.5))
        _check_best_of(best_of, best_of_hard, hard_share)
        rerank = self._reranker(args.get("rerank_with"), texts) if best_of > 1 else None
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        n = cond.size()
        kept = prompt_tokens.shape[1] if prompt_tokens is not None else 0
        bar = progress if isinstance(progress, tqdm) else tqdm(
            total=n * best_of * (self.prior.config.seq_len - kept), desc="sampling", unit="tok", unit_scale=True,
            disable=not progress, leave=False)
        drawing = {"temperature": args["temperature"], "top_k": top_k, "top_p": top_p, "cfg_scale": args["cfg_scale"],
                   "generator": generator, "on_token": bar.update, "static_cache": bool(args.get("static_cache", True)),
                   "compile_step": bool(args.get("compile_step"))}

        def grow_bar(more_samples: int) -> None:  # best_of_hard's draws, beyond the bar's best_of per image
            bar.total += more_samples * (self.prior.config.seq_len - kept)

        images = []
        for start in range(0, n, batch_size):
            part = _slice_condition(cond, start, min(n, start + batch_size)).to(self.device)
            prompt = prompt_tokens[start:start + batch_size] if prompt_tokens is not None else None
            rows = texts[start:start + batch_size] if texts is not None else None
            if best_of == 1:
                tokens = generate(self.prior, part, prompt_tokens=prompt, **drawing)
            else:
                tokens = self._best_of(part, prompt, rows, (best_of, best_of_hard, hard_share), rerank, drawing,
                                       grow_bar)
            images += self.decode(tokens)
        if bar is not progress:
            bar.close()
        return images

    def _best_of(self, part: Condition, prompt: torch.Tensor | None, texts: list[str] | None,
                 counts: tuple[int, int, float], rerank, drawing: dict, grow_bar) -> torch.Tensor:
        """For each row of `part`, best_of samples drawn and the best-scoring kept; with best_of_hard,
        the hard_share of rows whose best scores lowest get best_of_hard - best_of more draws, and
        keep the best of all -> ids (rows, seq_len)."""
        best_of, best_of_hard, hard_share = counts
        tokens, scores = self._draw(part, prompt, texts, best_of, rerank, drawing)
        pick = scores.argmax(1)  # (rows,)
        tokens, best = tokens[torch.arange(len(pick)), pick], scores.gather(1, pick[:, None])[:, 0]
        hard = _least_sure(best, hard_share) if best_of_hard > best_of else []
        if len(hard) == 0:
            return tokens
        extra = best_of_hard - best_of
        grow_bar(len(hard) * extra)
        more, more_scores = self._draw(_select_condition(part, hard), prompt[hard] if prompt is not None else None,
                                       [texts[i] for i in hard] if texts is not None else None, extra, rerank, drawing)
        pick = more_scores.argmax(1)
        better = more_scores.gather(1, pick[:, None])[:, 0] > best[hard]  # a tie keeps the first draw's
        tokens[hard[better]] = more[torch.arange(len(pick)), pick][better]
        return tokens

    def _draw(self, part: Condition, prompt: torch.Tensor | None, texts: list[str] | None, k: int, rerank,
              drawing: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """k samples for each row of `part` -> their ids (rows, k, seq_len) and scores (rows, k): the
        prior's own conditional minus null log-likelihood, or the captioner's log p(prompt | codes)."""
        rows = part.size()
        prompt = prompt.repeat_interleave(k, 0) if prompt is not None else None
        tokens, scores = generate(self.prior, part.repeat(k), prompt_tokens=prompt, return_scores=True, **drawing)
        if rerank is not None:
            scores = rerank(tokens, [t for t in texts for _ in range(k)])
        return tokens.view(rows, k, -1), scores.view(rows, k)

    def _reranker(self, run: str | None, texts: list[str] | None):
        """The captioner that ranks samples (loaded once per run folder), or None for the prior's own score."""
        if not run:
            return None
        if texts is None:
            raise PromptError("re-ranking by a captioner (rerank_with) needs each image's prompt: use it when "
                              "sampling a text prior from prompts, not with completion or other priors")
        if run not in self._rerankers:
            reranker = CaptionReranker.from_run(run)
            reranker.check(self.prior.config.seq_len, self.prior.config.vocab_size)
            self._rerankers[run] = reranker
        return self._rerankers[run]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> list[Image.Image]:
        """(B, seq_len) ids -> PIL images."""
        h, w = self.prior.config.token_shape
        grid = (tokens.shape[0], h, w) + ((self.prior.config.tokens_per_position,)
                                          if self.prior.config.tokens_per_position > 1 else ())
        pixels = self.tokenizer.decode(tokens.reshape(grid).to(self.device))
        return [Image.fromarray(a) for a in to_uint8(pixels)]

    def complete(self, image: Image.Image | str | Path, keep_top: float = 0.5, num_images: int = 1,
                 seed: int | None = None, condition: Condition | None = None, **sampling) -> list[Image.Image]:
        """Keep the top `keep_top` of the image's token rows and sample the rest."""
        if not 0 <= keep_top < 1:
            raise PromptError(f"keep_top must be in [0, 1), not {keep_top}")
        _check_count(num_images)
        pixels = load_image(image, self.tokenizer.config.resolution)[None].to(self.device)
        with torch.no_grad():
            ids = self.tokenizer.encode(pixels).reshape(1, -1)
        h, w = self.prior.config.token_shape
        g = self.prior.config.group_size  # whole rows of the prior's blocks
        keep = math.floor(keep_top * h / g) * g * w * self.prior.config.tokens_per_position
        cond = condition or self._null_free_condition(num_images)
        return self._generate(cond, seed, ids[:, :keep].expand(num_images, -1), **sampling)

    def _null_free_condition(self, n: int) -> Condition:
        if self.prior.config.conditioning != "none":
            raise PromptError("this prior is conditional: pass condition= (a prompt or class) to complete()")
        return Condition(batch_size=n)

    # -- text ------------------------------------------------------------------------------------
    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from lgvq.text.encoder import FrozenTextEncoder

            c = self.prior.config
            self._text_encoder = FrozenTextEncoder(c.text_encoder, c.text_length, c.text_pooling).to(self.device)
        return self._text_encoder

    def check_prompts(self, prompts: list[str]) -> None:
        """Each prompt is text, not empty, and within the prior's prompt length."""
        limit = self.prior.config.text_length
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise PromptError("empty prompt: give the text to draw, e.g. 'a small red circle'")
            n = len(self.text_encoder.tokenizer(p)["input_ids"])
            if n > limit:
                shown = p if len(p) <= 80 else p[:77] + "..."
                raise PromptError(f"prompt {shown!r} has {n} tokens; this prior takes at most {limit} "
                                  f"(the longest caption it was trained on)")

    def text_condition(self, prompts: list[str]) -> Condition:
        self.check_prompts(prompts)
        feats = self.text_encoder.encode(prompts)
        return Condition(text=feats.tokens.float(), text_mask=feats.mask, text_ids=feats.input_ids)


class TextToImagePipeline(PriorPipeline):
    conditioning = "text"

    def __call__(self, prompt: str | list[str], num_images: int = 1, seed: int | None = None,
                 **sampling) -> list[Image.Image]:
        """`num_images` per prompt, in prompt order. Sampling options: temperature, top_k, top_p,
        cfg_scale, batch_size, best_of, best_of_hard, hard_share and rerank_with (a captioner run
        ranking the samples; defaults from the run's config)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise PromptError("no prompts given")
        _check_count(num_images)
        rows = [p for p in prompts for _ in range(num_images)]
        return self._generate(self.text_condition(rows), seed, texts=rows, **sampling)


class ClassConditionalPipeline(PriorPipeline):
    conditioning = "class"

    def class_ids(self, classes: int | str | list) -> list[int]:
        names = self.prior.config.class_names or []
        out = []
        for c in classes if isinstance(classes, list) else [classes]:
            if isinstance(c, str) and not c.strip().lstrip("+-").isdigit():
                if c not in names:
                    raise PromptError(f"unknown class name {c!r}; known: {', '.join(names) or 'none (use ids)'}")
                c = names.index(c)
            c = int(c)
            if not 0 <= c < self.prior.config.num_classes:
                raise PromptError(f"class {c} out of range: this prior knows classes 0..{self.prior.config.num_classes - 1}")
            out.append(c)
        return out

    def __call__(self, classes: int | str | list, num_images: int = 1, seed: int | None = None,
                 **sampling) -> list[Image.Image]:
        _check_count(num_images)
        labels = torch.tensor([c for c in self.class_ids(classes) for _ in range(num_images)])
        return self._generate(Condition(labels=labels), seed, **sampling)


class UnconditionalPipeline(PriorPipeline):
    conditioning = "none"

    def __call__(self, num_images: int = 1, seed: int | None = None, **sampling) -> list[Image.Image]:
        _check_count(num_images)
        return self._generate(Condition(batch_size=num_images), seed, **sampling)


PIPELINES = {"text": TextToImagePipeline, "class": ClassConditionalPipeline, "none": UnconditionalPipeline}


def load_pipeline(run_dir: str | Path, device: str | torch.device | None = None) -> PriorPipeline:
    """The pipeline matching the run's prior (text, class or unconditional)."""
    return PriorPipeline.from_pretrained(run_dir, device)


def _check_count(num_images: int) -> None:
    if num_images < 1:
        raise PromptError(f"num_images must be >= 1, not {num_images}")


def _slice_condition(cond: Condition, a: int, b: int) -> Condition:
    return cond.map(lambda t: t[a:b], batch_size=b - a)


def _select_condition(cond: Condition, rows: torch.Tensor) -> Condition:
    return cond.map(lambda t: t[rows.to(t.device)], batch_size=len(rows))


def _least_sure(best: torch.Tensor, share: float) -> torch.Tensor:
    """The rows (ascending) whose best score is among the lowest `share` of the batch's: the images
    the judge is least sure of, which `best_of_hard` draws more samples for."""
    k = round(share * len(best))
    return torch.topk(best, k, largest=False).indices.sort().values


def _check_best_of(best_of: int, best_of_hard: int, hard_share: float) -> None:
    if best_of < 1:
        raise PromptError(f"best_of must be >= 1, not {best_of}")
    if best_of_hard and (best_of == 1 or best_of_hard <= best_of):
        raise PromptError(f"best_of_hard ({best_of_hard}) counts all the samples drawn for the images the judge "
                          f"is least sure of: it needs best_of above 1 and must exceed best_of ({best_of}); "
                          f"0 turns it off")
    if not 0 <= hard_share <= 1:
        raise PromptError(f"hard_share is a share of the images, in [0, 1], not {hard_share}")


def _sample_defaults(run: RunDir) -> dict:
    """The run's `sample` section (RUN/config.yaml), else the defaults."""
    return asdict(load_config(PriorRunConfig, run.config).sample) if run.config.is_file() else {}
