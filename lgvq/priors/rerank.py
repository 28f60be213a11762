"""Re-ranking a text prior's samples by a captioning head: of the `best_of` samples drawn for a
prompt, keep the one whose codes make the prompt most likely under a captioner trained on the same
tokenizer's codes, log p(prompt | codes). DALL-E re-ranks by CLIP in the same way; here the
framework's own captioning head plays that part, so it works on any captioned data.

    rerank = CaptionReranker.from_run("runs/pipeline/captioner")
    scores = rerank(tokens, prompts, prior.config)      # (B, seq_len) sampled ids -> (B,)

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

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor, prompts: list[str], config) -> torch.Tensor:
        """codes (B, seq_len): sampled ids, in the order the code store holds them (the captioner's
        input); config: the prior's. -> the sum over the prompt's tokens of log p(token | codes,
        earlier tokens), one per sample (B,)."""
        head = self.head.to(codes.device)
        if codes.shape[1] != head.config.token_count or config.vocab_size != head.config.code_vocab_size:
            raise ConfigError(f"the captioner reads {head.config.token_count} codes of {head.config.code_vocab_size}; "
                              f"this prior draws {codes.shape[1]} of {config.vocab_size}: re-rank with a "
                              f"captioner trained on the prior's tokenizer (its code store)")
        inputs, targets = head.teacher_forcing(prompts, codes.device)
        logits = head.logits(codes, inputs).float()
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
        return -nll.view(targets.shape).sum(1)
