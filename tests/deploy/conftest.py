"""Fixtures for the Helm chart's tests: one stand-in cluster and one install of each values set, for all of them.

Both are session-scoped (tests/deploy is not a package, so pytest would treat a package scope as the session
anyway; only tests under tests/deploy can request them): the installs are expensive, and nothing a test does changes
them. Every `Helm.install` takes what it posted from the stand-in cluster, each Helm run is a fresh child process
with an in-memory release store, and no test mutates an `Install`, so sharing them between modules is safe.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.fake_kubernetes import FakeKubernetes
from tests.deploy.helm_support import SCENARIOS, Helm, Install


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    cluster = FakeKubernetes()
    try:
        yield Helm(cluster, tmp_path_factory.mktemp("helm"))
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def installs(helm: Helm) -> dict[str, Install]:
    return {name: helm.install(values) for name, values in SCENARIOS.items()}
