"""Seeded simulator of a review platform: advseq's bundled ``demo`` dataset.

Users review items (the contexts); malicious accounts promote a sponsored brand or attack
its competitors, in bursts, while benign users follow their own interests. Every text is
generated from the template grammar in ``lexicon.json``: no real people and no third-party
text. :func:`dataset_card` documents the mechanisms, parameters and caveats.

Modules: :mod:`~advseq.simulate.params` (the parameters the card prints),
:mod:`~advseq.simulate.lexicon` (words and templates), :mod:`~advseq.simulate.catalogue`
(items), :mod:`~advseq.simulate.personas` (users' styles and personas),
:mod:`~advseq.simulate.text` (post text), :mod:`~advseq.simulate.users` (post sequences
and :func:`simulate`), :mod:`~advseq.simulate.card` (the dataset card).
"""

from advseq.simulate.card import dataset_card
from advseq.simulate.users import simulate

__all__ = ["dataset_card", "simulate"]
