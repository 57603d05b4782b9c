"""A small conditional language model over posts: advseq's own generator.

No small pretrained generator is available offline, so advseq trains its own:
:class:`PostLM` (:mod:`advseq.lm.model`) is a small GPT-2 over advseq's word-level
vocabulary, conditioned on a post's context by prefix. It serves as

* the generator of the ``lm-generic`` baseline attack (:meth:`PostLM.sample`),
* the reference LM of the ``perplexity_ref`` text-quality metric (:meth:`PostLM.token_nll`,
  :func:`reference_lm`, cached on disk per training set),
* the base decoder of generators that condition on their own prefix embeddings
  (:meth:`PostLM.prefix`, :meth:`PostLM.embed`, :meth:`PostLM.generate_ids`).

Its training and the cached reference LM live in :mod:`advseq.lm.training`.
"""

from advseq.lm.model import PostLM
from advseq.lm.training import REF_LM_MAX_POSTS, REF_LM_VERSION, post_pairs, reference_lm

__all__ = ["REF_LM_MAX_POSTS", "REF_LM_VERSION", "PostLM", "post_pairs", "reference_lm"]
