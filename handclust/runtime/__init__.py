"""Runtime: the stage plan of a config, the one clip job both runners run (decode, stages, commit,
error policy), the Ray Data runner and connecting to Ray. Imports the layers below it
(base, core, I/O, modalities)."""
