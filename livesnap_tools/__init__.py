"""Tools around livesnap: benchmarks, chaos runs, the demo and test harness.

Nothing here is installed with the service (``setup.cfg`` packages only
``agent``, ``conductor`` and ``livesnap``), and the services never import it
(``tests/unit/test_layout.py``).  The scripts in ``tools/`` run these
modules from the repository root, and the tests import them:

``bench``, ``bench_api``, ``bench_pause``, ``bench_load``
    ``tools/bench``: how long the VM pauses and the work takes.
``chaos``
    ``tools/chaos``: faults injected at random under load, then the
    invariants checked.
``demo``
    ``tools/boot-vm`` and ``tools/run``: boot and register a demo VM.
``testvm``
    A disk-only ``-M none`` QEMU VM driven over QMP.
``fixtures``, ``broker``
    Deployments (in this process, or as processes over RabbitMQ),
    configuration overrides and service probes; a private RabbitMQ node.
"""
