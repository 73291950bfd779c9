"""Internal kernels behind the registered attention mechanisms.

The public mechanisms (``dense``, ``sparse``, ``lsh``, ``linear``, ``performer``,
``memory_efficient``) live one per file in :mod:`polyformer.attention` and are built by name
through the registry. The modules here are the numeric work they delegate to — tile layouts,
chunked and block-sparse kernels with their own autograd, feature maps and running-sum kernels —
and are not a stable interface: import a mechanism with ``attention.build(name)`` instead.
"""
