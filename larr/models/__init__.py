"""Layer 2: the pure PyTorch modules — the text embedder, the CTR model and its backbones.

    embedder          the LLM text embedder (stages 1-2) and its pooling
    ctr_model         stage 3: the aggregation encoder, LarrCTR and its serving form
    backbone_config   BackboneKind, BackboneConfig (``ctr.backbone``; no torch)
    field_vocab       FieldVocab: raw categorical values -> per-field indices (NumPy only)
    layers            the arch modules: field embedding, MLP, cross net, FM, target attention, FinalMLP's gate/fusion
    backbones/        one module per architecture (dnn, dcnv2, deepfm, finalmlp) over ``base.Backbone``;
                      the package itself is the registry (``BACKBONES``, ``build_backbone``)

Imported by training (to fit them), serving's torch runtime and export (to load and convert them);
imports only layer 1 (``larr.contract``, ``larr.text``, ``larr.tokenization``, ``larr.data``).
"""
