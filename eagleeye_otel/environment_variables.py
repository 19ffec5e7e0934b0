"""Environment variables read by Eagle Eye.

Only :meth:`eagleeye_otel.settings.Settings.from_env` reads them; everything else takes settings as arguments.
"""

from typing import Final

EAGLEEYE_NATS_URL: Final = "EAGLEEYE_NATS_URL"
"""
.. envvar:: EAGLEEYE_NATS_URL

NATS server URL(s), comma-separated (``nats://host:4222``, ``tls://host:4222``). Unset: publishers use
``nats://127.0.0.1:4222``, and ``eagle-eye up`` starts an embedded server there. Credentials in a URL
(``nats://user:password@host``, ``nats://token@host``) are taken out of it and never shown; prefer the variables
below.
"""

EAGLEEYE_ROUTING_ENABLED: Final = "EAGLEEYE_ROUTING_ENABLED"
"""
.. envvar:: EAGLEEYE_ROUTING_ENABLED

``false`` turns the vLLM plugin's NATS routing push off. Default ``true``.
"""

EAGLEEYE_ROUTING_SUBJECT: Final = "EAGLEEYE_ROUTING_SUBJECT"
"""
.. envvar:: EAGLEEYE_ROUTING_SUBJECT

Subject the routing messages are published on. Default ``eagle_eye.routing_metrics``.
"""

EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT: Final = "EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT"
"""
.. envvar:: EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT

Subject on which publishers answer a router's request for their current state. Default
``eagle_eye.routing_snapshot``.
"""

EAGLEEYE_METRICS_SUBJECT: Final = "EAGLEEYE_METRICS_SUBJECT"
"""
.. envvar:: EAGLEEYE_METRICS_SUBJECT

Subject the ``eagle_eye_nats`` metric exporter (``OTEL_METRICS_EXPORTER=eagle_eye_nats``) publishes OTLP metrics
on. Default ``eagle_eye.metrics``; must differ from :envvar:`EAGLEEYE_ROUTING_SUBJECT`.
"""

EAGLEEYE_INSTANCE_ID: Final = "EAGLEEYE_INSTANCE_ID"
"""
.. envvar:: EAGLEEYE_INSTANCE_ID

Identifier of this serving instance in routing messages. Default: the pod name (``POD_NAME`` or ``HOSTNAME``)
followed by the process id.
"""

EAGLEEYE_INSTANCE_ENDPOINT: Final = "EAGLEEYE_INSTANCE_ENDPOINT"
"""
.. envvar:: EAGLEEYE_INSTANCE_ENDPOINT

Optional URL where routers send this instance's requests (``http://10.0.0.7:8000``); copied into every message.
"""

EAGLEEYE_HEARTBEAT_INTERVAL: Final = "EAGLEEYE_HEARTBEAT_INTERVAL"
"""
.. envvar:: EAGLEEYE_HEARTBEAT_INTERVAL

Seconds between heartbeats while an engine is idle. Default 1.0; must be in (0, 1.5]: routers forget an engine
silent for 3 s (``RouterClient``'s default ``stale_after``), and two heartbeats must fit in that time.
"""

EAGLEEYE_NATS_TOKEN: Final = "EAGLEEYE_NATS_TOKEN"
"""
.. envvar:: EAGLEEYE_NATS_TOKEN

NATS token authentication. Never logged; prefer :envvar:`EAGLEEYE_NATS_TOKEN_FILE` on Kubernetes.
"""

EAGLEEYE_NATS_TOKEN_FILE: Final = "EAGLEEYE_NATS_TOKEN_FILE"
"""
.. envvar:: EAGLEEYE_NATS_TOKEN_FILE

Path of a file holding the NATS token (a mounted Kubernetes Secret), instead of :envvar:`EAGLEEYE_NATS_TOKEN`;
surrounding whitespace is ignored. Setting both is an error.
"""

EAGLEEYE_NATS_USER: Final = "EAGLEEYE_NATS_USER"
"""
.. envvar:: EAGLEEYE_NATS_USER

NATS user name; needs :envvar:`EAGLEEYE_NATS_PASSWORD`.
"""

EAGLEEYE_NATS_PASSWORD: Final = "EAGLEEYE_NATS_PASSWORD"
"""
.. envvar:: EAGLEEYE_NATS_PASSWORD

NATS password; needs :envvar:`EAGLEEYE_NATS_USER`. Never logged; prefer :envvar:`EAGLEEYE_NATS_PASSWORD_FILE` on
Kubernetes.
"""

EAGLEEYE_NATS_PASSWORD_FILE: Final = "EAGLEEYE_NATS_PASSWORD_FILE"
"""
.. envvar:: EAGLEEYE_NATS_PASSWORD_FILE

Path of a file holding the NATS password (a mounted Kubernetes Secret), instead of :envvar:`EAGLEEYE_NATS_PASSWORD`;
surrounding whitespace is ignored. Setting both is an error.
"""

EAGLEEYE_NATS_CREDS: Final = "EAGLEEYE_NATS_CREDS"
"""
.. envvar:: EAGLEEYE_NATS_CREDS

Path of a NATS credentials file (user JWT and NKey seed, as ``nsc`` writes it), for a server in operator mode.
Checked at start; the seed is never logged.
"""

EAGLEEYE_NATS_TLS_CA: Final = "EAGLEEYE_NATS_TLS_CA"
"""
.. envvar:: EAGLEEYE_NATS_TLS_CA

CA bundle that verifies the NATS server; setting it turns TLS on.
"""

EAGLEEYE_NATS_TLS_CERT: Final = "EAGLEEYE_NATS_TLS_CERT"
"""
.. envvar:: EAGLEEYE_NATS_TLS_CERT

Client certificate for mutual TLS; needs :envvar:`EAGLEEYE_NATS_TLS_KEY`.
"""

EAGLEEYE_NATS_TLS_KEY: Final = "EAGLEEYE_NATS_TLS_KEY"
"""
.. envvar:: EAGLEEYE_NATS_TLS_KEY

Private key of :envvar:`EAGLEEYE_NATS_TLS_CERT`.
"""

EAGLEEYE_NATS_SERVER_BIN: Final = "EAGLEEYE_NATS_SERVER_BIN"
"""
.. envvar:: EAGLEEYE_NATS_SERVER_BIN

Path of the ``nats-server`` binary used by the embedded server. Default: the one the ``nats-server-bin``
package installs beside the Python interpreter, else ``nats-server`` on ``PATH``.
"""

EAGLEEYE_METRICS_ENABLE: Final = "EAGLEEYE_METRICS_ENABLE"
"""
.. envvar:: EAGLEEYE_METRICS_ENABLE

Comma-separated vLLM metric names to record although they are off by default (``vllm.inter_token_latency``).
"""

EAGLEEYE_METRICS_DISABLE: Final = "EAGLEEYE_METRICS_DISABLE"
"""
.. envvar:: EAGLEEYE_METRICS_DISABLE

Comma-separated vLLM metric names not to record. A name in both lists is an error.
"""

EAGLEEYE_NODE_NAME: Final = "EAGLEEYE_NODE_NAME"
"""
.. envvar:: EAGLEEYE_NODE_NAME

The node the hardware monitor reports for: the ``<node>`` of its NATS subject and its ``host.name``. Default:
``NODE_NAME`` (set it from the Kubernetes downward API, ``spec.nodeName``), else the host name.
"""

EAGLEEYE_HARDWARE_SUBJECT_PREFIX: Final = "EAGLEEYE_HARDWARE_SUBJECT_PREFIX"
"""
.. envvar:: EAGLEEYE_HARDWARE_SUBJECT_PREFIX

The hardware monitor publishes OTLP metrics on ``<prefix>.<node>``. Default ``eagle_eye.hardware``.
"""

EAGLEEYE_NVML_LIBRARY: Final = "EAGLEEYE_NVML_LIBRARY"
"""
.. envvar:: EAGLEEYE_NVML_LIBRARY

Path of the ``libnvidia-ml.so.1`` the hardware monitor loads. Default: the dynamic loader's search.
"""

EAGLEEYE_DCMI_LIBRARY: Final = "EAGLEEYE_DCMI_LIBRARY"
"""
.. envvar:: EAGLEEYE_DCMI_LIBRARY

Path of the Huawei Ascend ``libdcmi.so`` the hardware monitor loads. Default: the loader's search path, then the
Ascend driver's install directories.
"""

EAGLEEYE_KERNEL_LOG: Final = "EAGLEEYE_KERNEL_LOG"
"""
.. envvar:: EAGLEEYE_KERNEL_LOG

Where the hardware monitor reads kernel-log events: ``auto`` (default: ``/dev/kmsg`` under the host root, else the
``dmesg`` command), ``off``, or the path of a log file to follow.
"""

EAGLEEYE_HOST_ROOT: Final = "EAGLEEYE_HOST_ROOT"
"""
.. envvar:: EAGLEEYE_HOST_ROOT

Where the host's filesystem is mounted in the hardware monitor's container (``/hostfs``), for ``/dev/kmsg`` and the
Ascend driver's ``version.info``. Default ``/``.
"""

EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT: Final = "EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT"
"""
.. envvar:: EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT

What the diagnosis service subscribes to for OTLP hardware metrics; wildcards allowed. Default
``<EAGLEEYE_HARDWARE_SUBJECT_PREFIX>.>`` (``eagle_eye.hardware.>``).
"""

EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX: Final = "EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX"
"""
.. envvar:: EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX

The diagnosis service publishes findings on ``<prefix>.<node>``. Default ``eagle_eye.diagnosis``.
"""

EAGLEEYE_DIAGNOSIS_HTTP: Final = "EAGLEEYE_DIAGNOSIS_HTTP"
"""
.. envvar:: EAGLEEYE_DIAGNOSIS_HTTP

Where the diagnosis service serves its report page and JSON API: ``host:port`` (port 0 picks a free one), or
``off``. Default ``0.0.0.0:9467``.
"""

EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL: Final = "EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL"
"""
.. envvar:: EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL

Seconds between two restatements of every active finding on NATS (``change: active``), so a router that joined
late or missed a message catches up. Default 5; must be in (0, 300].
"""

EAGLEEYE_INSTANCE_DEVICES: Final = "EAGLEEYE_INSTANCE_DEVICES"
"""
.. envvar:: EAGLEEYE_INSTANCE_DEVICES

Comma-separated ids of the accelerators a vLLM instance uses, as the hardware monitor names them (GPU UUIDs,
``npu-<card>-<device>``), copied into its routing messages so routers can avoid it while one has a critical finding.
Default: the GPU UUIDs in ``NVIDIA_VISIBLE_DEVICES``, else in ``CUDA_VISIBLE_DEVICES``; none when those hold
indices.
"""
