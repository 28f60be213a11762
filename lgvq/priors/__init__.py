"""Stage two: GPT priors over code sequences (model, sampling, training)."""
