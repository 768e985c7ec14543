"""FID and KID in a labelled feature space, against reference statistics cached by content.

``features`` holds the extractors (torch-fidelity networks, by name), ``reference`` the cached reference
statistics, ``distance`` FID and KID, ``cache`` the disk cache; ``digits`` and ``inception`` are the two
extractors' own code, and ``compat`` says whether samples, extractor and reference can give a meaningful FID.
``registry`` lists the metrics by name (``metric`` says what one is; ``precision_recall`` is one), and
``reported`` checks a spec's ``metric.report`` against it before a study is stored.
"""

from skipsearch.files import cache_dir
from skipsearch.metrics.cache import cached_array, write_cached_array
from skipsearch.metrics.distance import Statistics, fid, kid, statistics
from skipsearch.metrics.features import EXTRACTORS, FeatureExtractor, extractor_fingerprint, extractor_weights
from skipsearch.metrics.reference import Reference, reference

__all__ = ["EXTRACTORS", "FeatureExtractor", "Reference", "Statistics", "cache_dir", "cached_array",
           "extractor_fingerprint", "extractor_weights", "fid", "kid", "reference", "statistics", "write_cached_array"]
