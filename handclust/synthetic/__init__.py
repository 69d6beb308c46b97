"""Synthetic data with a known truth, for the demo, tests and benchmarks: sample footage version 1
(:mod:`~handclust.synthetic.footage_v1`, also planted segment tables) and 2
(:mod:`~handclust.synthetic.footage_v2`), precomputed feature sets
(:mod:`~handclust.synthetic.features`) and the one entry point :func:`~handclust.synthetic.sample.make_sample_footage`.
Nothing in the product imports it except the entry points (``handclust sample-footage``, ``make_sample_footage``)."""
