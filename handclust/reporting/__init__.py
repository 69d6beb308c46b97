"""Reporting: evaluation (ground truth, ablations), naming activities (Gemini), per-clip timelines
and the HTML report with its excerpts and reel. Imports every layer below it (base, core, I/O,
modalities, runtime)."""
