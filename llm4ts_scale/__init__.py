"""llm4ts-scale: the LLM4TS recipe (alignment, then LP-FT forecasting) on any decoder LLM, at scale."""

__version__ = "0.1.0"
