"""Attribute names and values on Eagle Eye's vLLM metrics.

``gen_ai.*`` names are copied from the OpenTelemetry semantic conventions
(``opentelemetry.semconv._incubating.attributes.gen_ai_attributes``; a test checks they still match). Upstream has
no names for the vLLM engine, the Eagle Eye instance or vLLM's finish reasons, so those are ``vllm.*`` and
``eagleeye.*``.
"""

from typing import Final

GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
"""The serving engine; always :data:`GEN_AI_PROVIDER_NAME_VLLM` (semconv lets a self-hosted engine name itself)."""

GEN_AI_PROVIDER_NAME_VLLM: Final = "vllm"

GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
"""The served model name (``--served-model-name``, else the model path): what clients put in ``model``."""

EAGLEEYE_INSTANCE_ID: Final = "eagleeye.instance.id"
"""The Eagle Eye instance (``EAGLEEYE_INSTANCE_ID``, default ``<pod>-<pid>``), the routing message's ``instance``.

A point attribute, not ``service.instance.id``: that one is a resource attribute, which the Prometheus exporter
puts only on ``target_info`` and which collectors that copy resource attributes onto series would clash with.
"""

VLLM_ENGINE: Final = "vllm.engine"
"""Data-parallel engine index (int), vLLM's ``engine`` label."""

VLLM_FINISHED_REASON: Final = "vllm.finished_reason"
"""Why a request finished: ``stop``, ``length``, ``abort``, ``error`` or ``repetition`` (vLLM's ``finished_reason``).

Not ``gen_ai.response.finish_reasons``: that is an array-valued span attribute, one entry per choice.
"""

ENGINE_ATTRIBUTES: Final = (GEN_AI_PROVIDER_NAME, GEN_AI_REQUEST_MODEL, EAGLEEYE_INSTANCE_ID, VLLM_ENGINE)
"""The attributes every per-engine vLLM metric point carries."""
