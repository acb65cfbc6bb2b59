"""codemill: source-code archives -> curated data with provenance -> code language models."""

__version__ = "0.1.0"
