"""Attacks assembled from TextAttack (Morris et al., EMNLP 2020 demos): ``textattack``
runs an offline-capable TextAttack recipe (:mod:`~attacks.textattack.recipe`, which also
holds the shared driver and model wrapper), ``textbugger`` is TextBugger built from
TextAttack components (:mod:`~attacks.textattack.textbugger`). textattack itself is
imported on first use only."""
