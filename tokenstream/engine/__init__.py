"""The stream engine: the typed reply model, tokenizer, pacer, scheduler, and the one runner
that plays every reply out."""
