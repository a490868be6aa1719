"""Box's coding agents: the providers, the models each offers, and the efforts each model takes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# REFERENCE.md §8 (POST /boxes/{boxId}/prompt): `claude` is an alias of `claude-code`,
# and each model takes its own set of `reasoningEffort` values (haiku takes none).
PROVIDER_ALIASES: Mapping[str, str] = MappingProxyType({"claude": "claude-code"})
_GPT_EFFORTS = ("none", "low", "medium", "high", "xhigh")
MODEL_CATALOGUE: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "codex": MappingProxyType(
            {
                "gpt-5.5": _GPT_EFFORTS,
                "gpt-5.4": _GPT_EFFORTS,
                "gpt-5.4-mini": _GPT_EFFORTS,
                "gpt-5.3-codex": _GPT_EFFORTS[1:],
            }
        ),
        "claude-code": MappingProxyType(
            {
                "opus": ("low", "medium", "high", "max"),
                "sonnet": ("low", "medium", "high"),
                "haiku": (),
            }
        ),
    }
)
EFFORT_ORDER = ("none", "low", "medium", "high", "xhigh", "max")
ALL_MODELS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {name: efforts for models in MODEL_CATALOGUE.values() for name, efforts in models.items()}
)
