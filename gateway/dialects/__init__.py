"""Wire formats at the edge: each dialect parses its request into one upstream chat request
and renders the engine's events as its own (``engine.events.Sink``)."""
