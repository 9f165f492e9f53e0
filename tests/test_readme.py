"""Every ```python block of README.md runs as written.

Convention: the blocks of one section (a ``##`` or ``###`` heading) run in order in one namespace, so a block may
use what an earlier block of its section defined; each section starts afresh, in its own empty temporary folder.
A block is skipped only when the line before its fence is ``<!-- readme-test: skip (reason) -->`` with a reason
(e.g. it needs a download). All sections run in one subprocess (torch is imported once), threads capped, with
the network switched off; a failure names the section and the README line.
"""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*-->")


class Block(NamedTuple):
    section: str
    line: int  # README line of the block's first code line (1-based)
    code: str
    skip: str  # the reason, or "" to run it


def readme_blocks(text: str) -> List[Block]:
    """The ```python blocks of a Markdown text with their section, first line and skip reason."""
    blocks, section, lines = [], "(top)", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"#{2,3} ", line):
            section = line.lstrip("#").strip()
        if line.strip() == "```python":
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            previous = next((lines[j] for j in range(start - 2, -1, -1) if lines[j].strip()), "")
            marker = SKIP.search(previous)
            if "readme-test" in previous and marker is None:
                raise ValueError(f"README.md:{start}: a readme-test marker must read "
                                 "<!-- readme-test: skip (reason) --> with a reason")
            blocks.append(Block(section, start + 1, "\n".join(body) + "\n", marker["reason"] if marker else ""))
        i += 1
    return blocks


#: Runs the sections in one process; prints one JSON line per failed section.
RUNNER = textwrap.dedent("""
    import ast, json, os, socket, sys, tempfile, time, traceback
    import matplotlib
    matplotlib.use("Agg")

    def _no_network(*args, **kwargs):
        raise OSError("README blocks must not use the network")
    socket.socket.connect = _no_network
    socket.create_connection = _no_network

    sections = json.load(sys.stdin)
    home = os.getcwd()
    for section, blocks in sections:
        folder = tempfile.mkdtemp(prefix="readme-")
        os.chdir(folder)
        namespace = {"__name__": "__main__"}
        started = time.process_time()
        for line, code in blocks:
            try:
                tree = ast.increment_lineno(ast.parse(code, "README.md"), line - 1)
                exec(compile(tree, "README.md", "exec"), namespace)
            except BaseException as error:
                frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "README.md"]
                where = frames[-1].lineno if frames else getattr(error, "lineno", line)
                print("README-FAILURE " + json.dumps({"section": section, "line": where,
                                  "error": f"{type(error).__name__}: {error}"[:500]}), flush=True)
                break
        print(f"{section}: {time.process_time() - started:.1f} s CPU", file=sys.stderr)
        os.chdir(home)
""")


def test_readme_blocks_are_found_with_sections_and_lines():
    text = "# T\n## A\n```python\nx = 1\n```\n### B\n<!-- readme-test: skip (a download) -->\n```python\ny\n```\n"
    blocks = readme_blocks(text)
    assert [(b.section, b.line, b.code, b.skip) for b in blocks] == [("A", 4, "x = 1\n", ""),
                                                                      ("B", 9, "y\n", "a download")]
    with pytest.raises(ValueError, match="README.md:4: a readme-test marker"):
        readme_blocks("## A\n<!-- readme-test: skip -->\n\n```python\ny\n```\n")


@pytest.mark.slow
def test_every_readme_python_block_runs():
    sections = {}
    for block in readme_blocks(README.read_text()):
        if not block.skip:
            sections.setdefault(block.section, []).append((block.line, block.code))
    assert sections, "no ```python block found in README.md"
    env = {"PYTHONPATH": f"{ROOT / 'src'}", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(list(sections.items())),
                         capture_output=True, text=True, timeout=1200, env=env)
    # A block may print anything; failures are the lines the runner marks.
    failures = [json.loads(line[len("README-FAILURE "):]) for line in out.stdout.splitlines()
                if line.startswith("README-FAILURE ")]
    report = "\n".join(f"README.md:{f['line']} (section {f['section']!r}): {f['error']}" for f in failures)
    print(out.stderr[-3000:])  # per-section CPU seconds, shown with -s or on failure
    assert out.returncode == 0, out.stderr[-3000:]
    assert not failures, "README blocks that do not run:\n" + report
