"""The public serving contract of the ``larr`` ensemble, stated once.

Export builds every ``config.pbtxt`` from these names; the gRPC client imports them; the python-backend
models read their own tensor names from ``args["model_config"]``, never from here.
Importable without torch.
"""

from __future__ import annotations

ENSEMBLE_NAME = "larr"
FEATURE_CACHE_MODEL = "feature_cache"
EMBEDDER_MODEL = "embedder"
CTR_MODEL = "ctr"
# fresh_text_policy async, cpu target: the embedder's files served by a second model whose stub runs at idle OS
# priority, for the background embedding of fresh texts (larr.serving.fresh_text)
EMBEDDER_BACKGROUND_MODEL = "embedder_background"

# Ensemble inputs / outputs (what clients send and receive).
SCENE_TEXT = "SCENE_TEXT"  # BYTES [K]: UTF-8, one text per scene feature, in the published feature order
USER_ID = "USER_ID"  # INT64 [1]
ITEM_IDS = "ITEM_IDS"  # INT64 [N]: candidate items
CTR = "CTR"  # FP32 [N]: click probabilities, same order as ITEM_IDS

# Internal tensors between the ensemble steps.
SCENE_EMB = "SCENE_EMB"  # FP32 [K, D]
INPUT_IDS = "input_ids"  # INT64 [B, T], right padded
ATTENTION_MASK = "attention_mask"  # INT64 [B, T]
EMBEDDING = "embedding"  # FP32 [B, D], L2-normalised
# The batched ctr graph (one run per dynamic batch of B requests with T candidates in all):
ITEM_REQUEST = "ITEM_REQUEST"  # INT64 [T]: the request (0..B-1) each concatenated candidate belongs to

# Model-config parameters the repository publishes (string values; lists are JSON).
PARAM_SCENE_FEATURES = "scene_features"
PARAM_MAX_CANDIDATES = "max_candidates"
PARAM_EMBEDDER_VERSION = "embedder_version"

# Beside the served models, not read by Triton: the catalogue's item names, a JSON list (name of item id i at i),
# in the ensemble's version folder, relative to the repository. `larr export` writes it; `larr query
# --model-repository` prints the names next to the ids.
ITEM_NAMES_PATH = f"{ENSEMBLE_NAME}/1/item_names.json"
SCENE_IDS = "SCENE_IDS"  # INT64 [K]: each scene text's field index in the CTR model's vocabulary (0 = unseen)

# The unseen-text row: what stands in for the LLM embedding of a scene text that is not embedded yet. Every
# component is this value, i.e. the row is zeros (D,). Training drops scene embeddings to it
# (CTRConfig.scene_dropout) so that the model scores such scenes sensibly; feature_cache answers store
# misses with it under fresh_text_policy "async".
UNSEEN_SCENE_FILL = 0.0

# Parameters of the internal models (read by the python-backend adapters from args["model_config"]).
PARAM_SCENE_STORE = "scene_store"  # feature_cache: which SceneStore holds the vectors (larr.serving.stores.factory.StoreKind)
PARAM_CACHE_CAPACITY = "cache_capacity"  # feature_cache: store bound, in entries
PARAM_REDIS_URL = "redis_url"  # feature_cache, scene_store redis: read by larr.serving.stores.redis (redis_*)
PARAM_REDIS_SOCKET_TIMEOUT_MS = "redis_socket_timeout_ms"  # feature_cache, scene_store redis: longest Redis wait
PARAM_REDIS_RETRY_AFTER_S = "redis_retry_after_s"  # feature_cache, scene_store redis: skip Redis this long after a failure
PARAM_CACHE_MAX_BYTES = "cache_max_bytes"  # feature_cache: LRU bound, in bytes (serving.stores.lru.entry_bytes; 0 = none)
PARAM_EMBEDDER_MODEL = "embedder_model"  # feature_cache: the model its BLS calls go to
PARAM_EMBEDDER_MAX_BATCH = "embedder_max_batch"  # feature_cache: texts per BLS request (embedder max_batch_size)
PARAM_FRESH_TEXT_POLICY = "fresh_text_policy"  # feature_cache: strict|async|deadline (larr.serving.fresh_text.FreshTextPolicy)
# feature_cache, deadline: the longest a request waits for its fresh texts' embeddings, in ms (then: unseen-text row)
PARAM_MISS_DEADLINE_MS = "miss_deadline_ms"
PARAM_BACKGROUND_EMBEDDER_MODEL = "background_embedder_model"  # feature_cache: where background (async) BLS calls go
# feature_cache, async: the largest share of wall time the background embedder spends embedding (1 = no pause)
PARAM_BACKGROUND_BUSY_SHARE = "background_busy_share"
PARAM_PROCESS_NICE = "process_nice"  # embedder: added to the stub process's niceness at start (0 = unchanged)
PARAM_RUNTIME = "runtime"  # embedder / ctr: "onnxruntime" | "torch"
PARAM_DEVICE = "device"  # embedder / ctr: "cpu" | "cuda" (| "cuda:N")
PARAM_MODEL_FILE = "model_file"  # embedder / ctr: file (or folder for runtime torch) in the version folder
PARAM_INTRA_OP_THREADS = "intra_op_threads"  # embedder / ctr: ONNX Runtime / torch threads, 0 = default
# embedder / ctr, runtime torch: JSON {"batch": [...], "length": [...]}: calls padded to these static shapes
# (larr.serving.buckets); with it on CUDA, one CUDA graph per shape captured at load (larr.serving.graphs)
PARAM_SHAPE_BUCKETS = "shape_buckets"
PARAM_CUDA_GRAPHS = "cuda_graphs"  # embedder / ctr, shape_buckets on CUDA: "true" (default) | "false" (eager, padded)
PARAM_TORCH_DTYPE = "torch_dtype"  # embedder / ctr, shape_buckets: "float32" | "bfloat16" (default: bf16 on CUDA)
PARAM_VOCAB_SIZE = "vocab_size"  # embedder: rows of the token-embedding table; INPUT_IDS must be in [0, vocab_size)
# ctr: JSON list, per scene feature the rows of its field table (row 0 = unseen); SCENE_IDS[k] must be in [0, size_k)
PARAM_SCENE_VOCAB_SIZES = "scene_vocab_sizes"

# Files in the version folders.
TOKENIZER_FILE = "tokenizer.json"
EMBEDDING_CONFIG_FILE = "embedding_config.json"
SCENE_VOCAB_FILE = "scene_vocab.json"  # {"fields": [...scene features...], "values": [[texts of field 1], ...]}
# The precomputed scene table (`larr embed-scenes`, larr.export.scene_table; read by larr.serving.stores.table).
SCENE_TABLE_FILE = "scene_table.safetensors"  # one tensor "embeddings" (N, D), row i is key i of the index
SCENE_TABLE_INDEX_FILE = "scene_table.json"  # embedder_version, dim, dtype, features, keys [[feature, text, xxh64], ...]
