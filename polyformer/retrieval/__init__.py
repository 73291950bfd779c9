"""Image search: embed a folder of images into an on-disk index, then find the images nearest to
a text or an image.

* :mod:`~polyformer.retrieval.index` — the index folder (shards committed by a manifest);
* :mod:`~polyformer.retrieval.build` — embedding a folder into it, resumable;
* :mod:`~polyformer.retrieval.search` — exact cosine top-k (FAISS optional);
* :mod:`~polyformer.retrieval.fingerprint` — which model made an index.

The embedding function is any ``images -> (n, dim)`` callable; ``polyformer clip index`` and
``polyformer clip search`` use a CLIP model's image and text towers.
"""

from polyformer.retrieval.build import BuildReport, UnreadableImageWarning, build_index, list_images
from polyformer.retrieval.fingerprint import model_fingerprint
from polyformer.retrieval.index import ImageIndex, IndexMismatchError, ShardError
from polyformer.retrieval.search import SearchHit, search_index, top_k_cosine

__all__ = ["BuildReport", "ImageIndex", "IndexMismatchError", "SearchHit", "ShardError", "UnreadableImageWarning",
           "build_index", "list_images", "model_fingerprint", "search_index", "top_k_cosine"]
