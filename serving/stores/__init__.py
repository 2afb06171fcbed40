"""Where the feature cache's scene embeddings live: the ``SceneStore`` protocol, its tiers and the one factory.

============  ===================================================================================
``protocol``  :class:`SceneKey`, :class:`StoreStats`, the :class:`SceneStore` protocol, ``scene_key``:
              all the feature cache imports (it never names a concrete store)
``factory``   ``make_store``: the store a ``feature_cache`` model config's ``scene_store`` names
``lru``       L1, in-process, bounded in entries and bytes
``table``     the precomputed scene table (``larr embed-scenes``), read-only, memory-mapped
``redis``     L2, shared by every replica; a failure costs misses, never errors
``tiered``    tiers of stores, fastest first, with promotion and write-through
============  ===================================================================================

No Triton and no torch anywhere here. Nothing is imported by this file, so importing the protocol
loads no concrete store.
"""
