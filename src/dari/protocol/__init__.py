"""Sans-IO wire protocols: bytes in, frames and requests out; responses in, bytes out."""
