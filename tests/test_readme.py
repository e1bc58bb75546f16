"""README.md's usage example runs as written; its benchmark tables are those of the CSVs."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 (our own README)
    assert namespace["y"].shape == namespace["x"].shape
    assert namespace["x"].grad is not None


def test_readme_benchmark_tables_match_the_csvs():
    """The tables are generated from bench/results/*.csv; a CSV committed without rerunning
    bench/tables.py (or a hand edit of the tables) fails here."""
    script = README.parent / "bench" / "tables.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
