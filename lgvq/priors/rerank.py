"""Re-ranking a text prior's samples by a captioning head: of the `best_of` samples drawn for a
prompt, keep the one whose codes make the prompt most likely under a captioner trained on the same
tokenizer's codes, log p(prompt | codes). DALL-E re-ranks by CLIP in the same way; here the
framework's own captioning head plays that part, so it works on any captioned data.

    rerank = CaptionReranker.from_run("runs/pipeline/captioner")
    rerank.check(prior.config.seq_len, prior.config.vocab_size)   # before drawing anything
    scores = rerank(tokens, prompts)                    # (B, seq_len) sampled ids -> (B,)

The prior's own score (its conditional minus null log-likelihood, lgvq/priors/sampling.py) costs
nothing; this one costs a captioner pass per sample, small beside drawing the sample.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from lgvq.downstream.captioning import CaptionHead
from lgvq.errors import ConfigError
from lgvq.runs import model_dir


class CaptionReranker:
    def __init__(self, head: CaptionHead):
        self.head = head.eval()

    @classmethod
    def from_run(cls, run: str | Path) -> CaptionReranker:
        """A captioner run folder (RUN or RUN/model)."""
        return cls(CaptionHead.from_pretrained(model_dir(run)))

    def check(self, seq_len: int, vocab_size: int) -> None:
        """ConfigError unless the captioner reads what a prior drawing seq_len ids of vocab_size draws."""
        cfg = self.head.config
        if (seq_len, vocab_size) != (cfg.token_count, cfg.code_vocab_size):
            raise ConfigError(f"the captioner reads {cfg.token_count} codes of {cfg.code_vocab_size}; this prior "
                              f"draws {seq_len} of {vocab_size}: re-rank with a captioner trained on the prior's "
                              f"tokenizer (its code store)")

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """codes (B, seq_len): sampled ids, in the order the code store holds them (the captioner's
        input) -> the sum over the prompt's tokens of log p(token | codes, earlier tokens), one per
        sample (B,)."""
        head = self.head.to(codes.device)
        inputs, targets = head.teacher_forcing(prompts, codes.device)
        logits = head.logits(codes, inputs).float()
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
        return -nll.view(targets.shape).sum(1)
