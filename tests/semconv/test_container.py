"""The ``container.*`` names copied from upstream semantic conventions still match upstream."""

from __future__ import annotations

from opentelemetry.semconv._incubating.metrics import container_metrics as upstream

from eagleeye_otel.semconv import _container as ours


def test_upstream_names_match():
    assert ours.CONTAINER_MEMORY_USAGE == upstream.CONTAINER_MEMORY_USAGE
    assert ours.CONTAINER_CPU_TIME == upstream.CONTAINER_CPU_TIME


def test_upstream_units_match():
    """Units live only in upstream's factories, so read them off the instruments they create."""
    created = {}

    class Recorder:
        def __getattr__(self, kind):
            def create(**kwargs):
                created[kwargs["name"]] = kwargs["unit"]

            return create

    upstream.create_container_memory_usage(Recorder())
    upstream.create_container_cpu_time(Recorder())
    assert created == {
        ours.CONTAINER_MEMORY_USAGE: ours.CONTAINER_MEMORY_USAGE_UNIT,
        ours.CONTAINER_CPU_TIME: ours.CONTAINER_CPU_TIME_UNIT,
    }


def test_own_names_stay_in_the_eagleeye_namespace():
    own = [value for name, value in vars(ours).items() if name.startswith("EAGLEEYE_") and "_UNIT" not in name]
    assert len(own) == 5
    assert all(value.startswith("eagleeye.container.") for value in own)
