"""Diff-Tuning's further reference, by the name its numbers go by everywhere.

Every trial is scored twice on the same samples: against the new domain (the target, the objective) and against
the pre-training domain (``finetune.source_reference``), whose FID measures what fine-tuning forgot. The second
is the domain ``SOURCE``: measurement rows carry it, and the frames' columns are named from it (``source_fid``,
``heldout_source_fid``). Its own module, imported by the method and by its trial alike, so neither imports the
other for it.
"""

from __future__ import annotations

SOURCE = "source"  # the pre-training reference's domain
MEASURES = "forgetting"  # what its FID measures, as readers say it
