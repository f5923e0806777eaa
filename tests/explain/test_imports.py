from __future__ import annotations

import subprocess
import sys


def test_gateway_side_modules_do_not_import_torch() -> None:
    """torch aborts a process that has run rego-cpp: the gateway imports these, never torch."""
    code = (
        "import sys\n"
        "import explain, explain.record, explain.evidence, explain.render, explain.store, explain.types\n"
        "loaded = sorted(m for m in ('torch', 'captum', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
