"""I/O: decoding video, finding clips (and their identity), output roots (local folders, s3://,
gs://), the run's tables read back, ``run.json`` and the one-writer lock on an output folder.
Imports the base modules and nothing above."""
