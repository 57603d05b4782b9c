"""The ``llm`` attack: a pretrained instruction-tuned LM (SmolLM2-135M-Instruct, offline)
writes the user's next post and rewrites it with the detector's verdicts."""

from attacks.llm.attack import LLMAttack

__all__ = ["LLMAttack"]
