"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto; this uses nbconvert), or `--check` that they agree."""
import os, sys, re
from pathlib import Path
import nbformat
from nbconvert.exporters import MarkdownExporter
from execnb.nbio import read_nb, nb2dict
from execnb.shell import CaptureShell

root = Path(__file__).resolve().parent.parent
header = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"

def _output_only(cell) -> nbformat.NotebookNode:
    "A `#| echo: false` cell as a markdown cell of its outputs: markdown as is, text in a fence (as the docs site shows it)."
    parts = []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if "text/markdown" in data: parts.append(data["text/markdown"])
        elif o.get("output_type") == "stream" or "text/plain" in data:
            parts.append("```\n" + (o.get("text") or data["text/plain"]).rstrip("\n") + "\n```")
    return nbformat.v4.new_markdown_cell("\n\n".join(parts))

def render() -> str:
    nb = read_nb(root / "nbs/index.ipynb")
    cwd = os.getcwd()
    os.chdir(root / "nbs")  # as nbdev_test runs it: relative paths (results/) resolve from nbs/
    try: CaptureShell(path=root / "nbs").run_all(nb, exc_stop=True)  # the README shows outputs of real runs
    finally: os.chdir(cwd)
    nb = nbformat.reads(nbformat.writes(nbformat.from_dict(nb2dict(nb))), as_version=4)
    nb.metadata["language_info"] = {"name": "python"}  # fenced code blocks get ```python
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith(("#| hide", "#|hide"))]
    nb.cells = [_output_only(c) if c.source.lstrip().startswith("#| echo: false") else c for c in nb.cells]
    md, _ = MarkdownExporter().from_notebook_node(nb)
    return header + re.sub(r"\n{3,}", "\n\n", md).strip() + "\n"

if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if (root / "README.md").read_text() != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`")
        print("README.md is in sync with nbs/index.ipynb")
    else:
        (root / "README.md").write_text(text); print("wrote README.md")
