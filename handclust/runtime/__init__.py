"""Runtime: the stage plan of a config, the one clip job both runners run (decode, stages, commit,
error policy), the executor (local or Ray: where the work that fans out runs, and the one owner of
the connection to Ray), the local and Ray Data runners. Imports the layers below it
(base, core, I/O, modalities)."""
