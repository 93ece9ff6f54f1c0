"""Sessions: one stream, one nursery; its framing, events, endings and admission."""
