"""Text-quality metrics of written posts, offline, next to the same users' real posts.

PETGEN's measures, computed the authors' way where they said how:

* **realism** — ``bleu_2``..``bleu_5``: NLTK ``sentence_bleu`` (smoothing method1,
  uniform weights) of each post against the *set* of all real last posts;
  ``bleu_history_2``..``bleu_history_5``: against the user's own earlier posts;
* **diversity** — ``self_bleu_2``..``self_bleu_4``: each post against all the others
  (lower = more diverse);
* **fluency** — ``perplexity_judge`` (SmolLM2, an LM advseq did not train) and
  ``perplexity_ref`` (advseq's reference LM trained on the training users' posts);
* **topic** — LDA with 2, 7, 12 and 17 topics fitted on the contexts (on the posts when
  a dataset has none), similarity = 1 - cosine distance of topic distributions averaged
  over the four models: to the target context, to the user's most recent earlier post,
  and to the user's earlier posts on the same context (the mean over all of them, where
  the authors drew one at random; users with none are left out);
* **style** — cosine similarity of character 2-4-gram profiles (within words) of the
  post and the user's concatenated earlier posts;
* **copies** — shares of exact and near copies of posts the writer could have seen, and
  of repetitive posts.

One module per family (:mod:`~advseq.quality.bleu`, :mod:`~advseq.quality.style`,
:mod:`~advseq.quality.topics`, :mod:`~advseq.quality.copies`);
:mod:`~advseq.quality.summary` combines them into :func:`quality_report`. What each
metric means and its caveats: ``docs/quality-metrics.md``.
"""

from __future__ import annotations

from advseq.quality.bleu import (
    BLEU_ORDERS,
    SELF_BLEU_MAX,
    SELF_BLEU_ORDERS,
    bleu,
    bleu_scores,
    bleu_tokens,
    sample_indices,
    self_bleu,
    self_bleu_scores,
)
from advseq.quality.copies import NEAR_COPY_JACCARD, REPETITIVE_SHARE, copy_flags, repetitive_flags
from advseq.quality.items import SAME_CONTEXT_RELEVANCY, QualityItem
from advseq.quality.style import STYLE_NGRAMS, char_ngrams, style_similarities, style_similarity
from advseq.quality.summary import (
    JUDGE_MODEL,
    METRICS,
    REFERENCE_LM,
    PerplexityModel,
    not_independent,
    quality_metrics,
    quality_report,
)
from advseq.quality.topics import (
    LDA_MAX_DOCS,
    LDA_MAX_ITER,
    TOPIC_COUNTS,
    TopicModels,
    topic_models,
    topic_similarities,
)

__all__ = [
    "JUDGE_MODEL", "REFERENCE_LM", "not_independent",
    "BLEU_ORDERS", "LDA_MAX_DOCS", "LDA_MAX_ITER", "METRICS", "NEAR_COPY_JACCARD",
    "REPETITIVE_SHARE", "SAME_CONTEXT_RELEVANCY", "SELF_BLEU_MAX", "SELF_BLEU_ORDERS",
    "STYLE_NGRAMS", "TOPIC_COUNTS", "PerplexityModel", "QualityItem", "TopicModels", "bleu",
    "bleu_scores", "bleu_tokens", "char_ngrams", "copy_flags", "quality_metrics",
    "quality_report", "repetitive_flags", "sample_indices", "self_bleu", "self_bleu_scores",
    "style_similarities", "style_similarity", "topic_models", "topic_similarities",
]
