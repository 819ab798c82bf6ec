"""asyncio adapters: listeners and connections that feed the sans-IO codecs and call the domain."""
