"""Hardware diagnosis: rules over OTel hardware telemetry that name the fault, its severity and the action."""

from eagleeye_otel.diagnosis._engine import DiagnosisEngine, EngineStats
from eagleeye_otel.diagnosis._finding import Finding, FindingChanges, Severity
from eagleeye_otel.diagnosis._knowledge import KnowledgeBase, load_knowledge_base

__all__ = [
    "DiagnosisEngine",
    "EngineStats",
    "Finding",
    "FindingChanges",
    "KnowledgeBase",
    "Severity",
    "load_knowledge_base",
]
