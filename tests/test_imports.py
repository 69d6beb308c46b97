import subprocess
import sys

HEAVY = ("torch", "ray", "cuml", "cupy", "mediapipe", "transformers", "umap", "google.genai")


def test_importing_handclust_loads_no_heavy_library():
    """`import handclust` (and the CLI) must stay cheap: models and clusters load inside stages."""
    code = (
        "import sys, handclust, handclust.pipeline, handclust.cli, handclust.activities\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at module level: {out.stdout.strip()}"
