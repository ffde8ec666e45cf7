"""llm4ts-scale: the LLM4TS recipe (alignment, then LP-FT forecasting) on any decoder LLM, at scale."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from llm4ts_scale import Forecaster` without importing torch for the CLI's sake."""
    if name == "Forecaster":
        from llm4ts_scale.api import Forecaster

        return Forecaster
    raise AttributeError(f"module 'llm4ts_scale' has no attribute {name!r}")


__all__ = ["Forecaster", "__version__"]
