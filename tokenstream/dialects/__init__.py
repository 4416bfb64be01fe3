"""API dialects: each parses its HTTP requests into the common request and encodes reply
events in its wire format and its errors in its error shape."""
