"""Server-sent events: the encoder, the WHATWG parser, and the transport that writes them."""
