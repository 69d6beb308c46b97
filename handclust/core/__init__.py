"""Pure core: numpy (and scikit-learn) functions of arrays, no I/O, no models, no Ray.

Periodicity, the boundary vote that cuts clips into segments, held-frame detection, the scores
(metrics), and the clustering package (fusion, HDBSCAN, two levels, the temporal model, backends).
Imports only the base modules at the top of ``handclust`` (config, schema, ...)."""
