"""Hardware diagnosis: rules over OTel hardware telemetry that name the fault, its severity and the action.

:class:`DiagnosisEngine` takes OTLP metric exports (the hardware monitor's, or any with the same names), kernel-log
lines and ``hardware-monitor --once`` snapshots, and evaluates the knowledge base (YAML rules, see
``docs/diagnosis.md``) into :class:`Finding` objects with hysteresis. :class:`DiagnosisService` runs it on the
hardware monitors' NATS exports and publishes each change as a :class:`FindingMessage` (``docs/diagnosis-service.md``).
"""

from eagleeye_otel.diagnosis._engine import DiagnosisEngine, EngineStats, KernelLogCounts
from eagleeye_otel.diagnosis._finding import SEVERITY_ORDER, Finding, FindingChanges, Severity
from eagleeye_otel.diagnosis._knowledge import KnowledgeBase, default_knowledge_files, load_knowledge_base
from eagleeye_otel.diagnosis._outputs import FindingChange, FindingMessage, encode_message
from eagleeye_otel.diagnosis._service import DiagnosisService, run_diagnosis_service
from eagleeye_otel.diagnosis._settings import DiagnosisSettings
from eagleeye_otel.diagnosis._telemetry import Limits

__all__ = [
    "SEVERITY_ORDER",
    "DiagnosisEngine",
    "DiagnosisService",
    "DiagnosisSettings",
    "EngineStats",
    "Finding",
    "FindingChange",
    "FindingChanges",
    "FindingMessage",
    "KernelLogCounts",
    "KnowledgeBase",
    "Limits",
    "Severity",
    "default_knowledge_files",
    "encode_message",
    "load_knowledge_base",
    "run_diagnosis_service",
]
