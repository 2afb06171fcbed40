"""Run ``tritonserver`` outside the NGC container, the same safe way for ``larr serve``, the tests and the benchmarks.

    install       locate tritonserver (PATH, else the nvidia-pytriton bundle) and prepare the bundle's python stub
    options       ports, admin key, TLS: ``ServerOptions``, ``TlsOptions`` and the ``build_command`` they make
    process       ``run_triton_server`` (start, readiness poll, stop in order, clear what a dead server left)
    supervisor    ``StubSupervisor``: reload a model whose python-backend stub died; its Prometheus metrics
    serve         ``serve_main``, the ``larr serve`` entry point: start -> watch -> restart policy
    ports         ``free_port`` / ``free_ports`` for servers started side by side (tests, benchmarks)

Beyond the standard library it imports ``prometheus_client`` (the supervisor's metrics) and, only when a server
starts, ``tritonclient``; never torch, so ``larr serve`` and a serving host stay light (import-linter contracts in
pyproject.toml hold both). Findings behind the choices: ``docs/serving-toolchain.md``.
"""
