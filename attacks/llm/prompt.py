"""What the ``llm`` attack tells the model, and how it reads the answer.

The prompt carries PETGEN's conditioning signals in words: the user's most recent posts
(style and recency), their earlier posts on the target context (relevancy) and the
context itself. After a round whose candidates missed the goal, the best of them come
back into the prompt with the detector's verdict (a score when the threat model grants
scores, else "flagged"), and the model is asked for a post that is flagged less: the
classifier-guided rewriting loop.

The answer is cleaned into one post: the first line, chat artifacts, list markers,
"Here is a post:"-style preambles and wrapping quotes removed, cut to the task's token
limit (at the last full sentence when the cut falls inside one), and lower-cased when
the user never writes capitals (a style rule the 135M model does not follow by itself).
Answers written as a chat assistant ("I'm glad to hear ..."), echoes of the prompt and
degenerate loops are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from advseq.attack import AttackTask
from advseq.candidates import truncate_post

SYSTEM = ("You are a user of an online platform writing your own posts. Keep your voice: "
          "the same length, words, punctuation and capitalisation as your earlier posts. "
          "Answer with the post only, on one line.")
#: the most words of the context the prompt shows
CONTEXT_WORDS = 60
#: the most words of an earlier post's context in its example turn
EXAMPLE_CONTEXT_WORDS = 12
#: candidates shorter than this many words are dropped
MIN_WORDS = 3

_PREAMBLE = re.compile(r"^(?:sure[,!.]?\s*)?(?:here(?:'s| is)|this is)\b[^:\n]{0,80}:\s*", re.I)
_LABEL = re.compile(r"^(?:new\s+)?(?:post|reply|answer|comment|tweet)\s*(?:\d+\s*)?[:\-]\s*", re.I)
_BULLET = re.compile(r"^(?:[-*•]+|\d{1,2}[.)])\s+")
_QUOTES = "\"'“”‘’`"
#: an answer the model wrote as a chat assistant (or echoing the prompt), not as the user
_ASSISTANT = re.compile(r"\b(?:as an ai|language model|chatbot|assistant|i'?m sorry|i am sorry|"
                        r"glad (?:to hear|you)|your (?:next )?post|moderator|flagged|suspicio)", re.I)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s|$)")


@dataclass(frozen=True)
class Draft:
    """A candidate shown back to the model with the detector's verdict on it: a
    P(malicious) when scores are granted, else None (it was flagged)."""

    text: str
    score: float | None


def _words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]) + (" ..." if len(words) > limit else "")


def style_posts(task: AttackTask, k: int) -> list[str]:
    """The user's ``k`` most recent posts before the new one (its style and recency)."""
    return [p.text for p in task.history.posts[-k:]] if k else []


def relevant_posts(task: AttackTask, k: int, skip: Sequence[str] = ()) -> list[str]:
    """Up to ``k`` of the user's earlier posts on the target context (newest first),
    other than ``skip``: PETGEN's relevancy signal."""
    if not task.context or not k:
        return []
    seen = set(skip)
    out = []
    for p in reversed(task.history.posts):
        if p.context == task.context and p.text not in seen:
            out.append(p.text)
            seen.add(p.text)
            if len(out) == k:
                break
    return out


def _ask(context: str | None, words: int) -> str:
    return (f"Write your next post about: {_words(context, words)}" if context
            else "Write your next post.")


def messages(task: AttackTask, *, recent: int, relevant: int,
             drafts: Sequence[Draft] = ()) -> list[dict[str, str]]:
    """The chat asking for the user's next post on the task's context.

    The user's earlier posts are the model's own earlier answers (each asked for by its
    context, shortened): the earlier posts on the target context first, then the most
    recent ones, oldest first, so the model continues a voice it has already been
    writing in. The last turn asks for a post on the full target context. ``drafts``
    (earlier candidates and the detector's verdicts) follow as answers that a moderator
    flagged, each with a request for a post that would not be flagged: the rewriting
    loop as a conversation."""
    limit = task.max_tokens + 10
    style = style_posts(task, recent)
    rel = relevant_posts(task, relevant, skip=style)
    shown = [(task.context, t) for t in reversed(rel)]
    shown += [(p.context, p.text) for p in task.history.posts[-recent:]] if recent else []
    chat = [{"role": "system", "content": SYSTEM}]
    for context, text in shown:
        chat += [{"role": "user", "content": _ask(context, EXAMPLE_CONTEXT_WORDS)},
                 {"role": "assistant", "content": _words(text, limit)}]
    chat.append({"role": "user", "content": _ask(task.context, CONTEXT_WORDS)})
    for d in drafts:
        verdict = f"flagged it as suspicious ({d.score:.2f} out of 1)" if d.score is not None \
            else "flagged it as suspicious"
        chat += [{"role": "assistant", "content": _words(d.text, limit)},
                 {"role": "user", "content": f"A moderator {verdict}. Write a different post on the "
                                             "same topic, in your voice, that an ordinary user would "
                                             "write and that would not be flagged."}]
    return chat


def lowercase_user(task: AttackTask) -> bool:
    """Whether the user writes without capital letters (then candidates are lower-cased)."""
    texts = [p.text for p in task.history.posts] or [p.text for p in task.user.posts]
    return bool(texts) and not any(ch.isupper() for t in texts for ch in t)


def clean(text: str, max_tokens: int, *, lowercase: bool = False, complete: bool = True) -> str:
    """One post from a model answer: the first non-empty line without chat artifacts,
    list markers, preambles or wrapping quotes, cut to ``max_tokens`` tokens, and ended
    at its last full sentence when it was cut (here, or by the sampler's token limit:
    ``complete`` false); "" when fewer than :data:`MIN_WORDS` words are left."""
    text = re.sub(r"<\|[^|>]*\|>", " ", text)
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    for _ in range(3):
        before = line
        line = _BULLET.sub("", _LABEL.sub("", _PREAMBLE.sub("", line))).strip()
        if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
            line = line[1:-1].strip()
        elif line and line[0] in _QUOTES and line.count(line[0]) == 1:
            line = line[1:].strip()
        if line == before:
            break
    line = " ".join(line.split())
    if _ASSISTANT.search(line) or _repeats(line):
        return ""
    if lowercase:
        line = line.lower()
    cut = truncate_post(line, max_tokens)
    if cut != line or not complete:    # cut mid-sentence: end at the last full sentence
        ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
        if ends and len(cut[:ends[-1]].split()) >= MIN_WORDS:
            cut = cut[:ends[-1]]
    return cut if len(cut.split()) >= MIN_WORDS else ""


def _repeats(text: str) -> bool:
    """Whether some three-word run occurs three times or more (a degenerate loop)."""
    words = text.lower().split()
    grams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]
    return any(grams.count(g) >= 3 for g in set(grams))
