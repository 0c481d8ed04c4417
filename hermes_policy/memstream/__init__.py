"""MemStream-style memory mechanics (our own formulas; see each module's docstring).

* :mod:`.keys`: adaptive key selection (drop patch keys that repeat the previous frame);
* :mod:`.merge`: dynamic patch-level compression (greedy merging of similar neighbours);
* :mod:`.reduce`: both, applied to each newly cached chunk, per layer, freeing real memory;
* :mod:`.ranker`: external image-text rankers (synthetic pixel evidence, CLIP-style encoders);
* :mod:`.fusion`: the retrieval mixture of experts and the temporal-bias measure.

The policies that use them live in :mod:`hermes_policy.policies.memstream`
(``memstream``: ReKV-style retrieval with fusion; ``hermes-memstream``: HERMES
with ingest-time key selection and compression).
"""

from hermes_policy.memstream.fusion import (
    detrend,
    fuse_scores,
    ls_slope,
    normalise,
    select_fused,
    temporal_bias,
    theil_sen_slope,
)
from hermes_policy.memstream.keys import KeyReference, flat_unrotated_keys, redundant_mask
from hermes_policy.memstream.merge import greedy_merge, patch_coords
from hermes_policy.memstream.ranker import ClipRanker, FrameRanker, SyntheticRanker, make_ranker, thumbnail
from hermes_policy.memstream.reduce import IngestReducer, memstream_state, row_sizes

__all__ = [
    "ClipRanker",
    "FrameRanker",
    "IngestReducer",
    "KeyReference",
    "SyntheticRanker",
    "detrend",
    "flat_unrotated_keys",
    "fuse_scores",
    "greedy_merge",
    "ls_slope",
    "make_ranker",
    "memstream_state",
    "normalise",
    "patch_coords",
    "redundant_mask",
    "row_sizes",
    "select_fused",
    "temporal_bias",
    "theil_sen_slope",
    "thumbnail",
]
