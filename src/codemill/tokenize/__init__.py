"""Decontamination, tokenizer, repository-context FIM documents, Megatron token shards and trace."""
