"""Funnel retrieval over Matryoshka embeddings: shortlist narrow, rerank wide.

This is the adaptive retrieval of Matryoshka Representation Learning
(Kusupati et al., 2022): a cheap search at a short prefix picks a shortlist,
and each later stage rescores only the survivors at a wider prefix. The
package is numpy-only; faiss, when installed, runs the first stage.

`FunnelIndex` (`_funnel.py`) holds the checks, the stages and the file
(`_index_file.py`); its first stage is one of the backends of
`_first_stage.py`, its later stages rerank with `_rerank.py`.
`mine_hard_negatives` (`_mining.py`) searches a corpus with it for the
hard negatives of contrastive training.
"""

from keras_mrl.retrieval._funnel import FunnelIndex
from keras_mrl.retrieval._mining import mine_hard_negatives

__all__ = ["FunnelIndex", "mine_hard_negatives"]
