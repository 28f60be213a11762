"""lgvq: language-aligned VQ tokenizers and GPT priors."""
__version__ = "0.1.0"
