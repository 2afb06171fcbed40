"""The Triton python-backend adapters, as package data: ``<model>/1/model.py`` for ``feature_cache``,
``embedder`` and ``ctr``.

Each adapter only converts a Triton request to the logic in ``larr.serving`` and back. ``larr export`` copies
them into the repository it writes (``larr.layout.packaged_adapters_dir`` says where they are, in a checkout and in an
installed wheel alike); Triton serves that exported repository, never this folder.
"""
