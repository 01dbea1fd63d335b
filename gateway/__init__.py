"""CoderClaw gateway: a local OpenAI-compatible endpoint in front of Hugging Face models."""

__version__ = "0.1.0"
