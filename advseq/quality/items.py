"""A post to score, with the user's earlier posts and the target context it is compared to."""

from __future__ import annotations

from dataclasses import dataclass

from advseq.schema import Post

#: an earlier post with at least this relevancy to the target context counts as on it
SAME_CONTEXT_RELEVANCY = 0.5


@dataclass(frozen=True)
class QualityItem:
    """One post to score with what it is compared to."""

    post: str
    history: tuple[Post, ...]   #: the user's posts before it, oldest first
    context: str | None         #: its target context
    use_relevancy: bool         #: history relevancy flags refer to this target context

    @property
    def history_texts(self) -> list[str]:
        return [p.text for p in self.history]

    def same_context(self) -> list[str]:
        """Earlier posts on the target context: same context, or relevancy >= 0.5 when
        the flags refer to this context."""
        return [p.text for p in self.history
                if (self.context and p.context == self.context)
                or (self.use_relevancy and p.relevancy is not None
                    and p.relevancy >= SAME_CONTEXT_RELEVANCY)]
