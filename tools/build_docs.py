#!/usr/bin/env python
"""Build the docs site from the notebooks: `python tools/build_docs.py` writes a static site to docs/site/.

It is also the notebook test: `--strict` runs every notebook once, as `nbdev_test` does, and fails on the first cell
that raises in each (notebook, cell and traceback printed), so scripts/test.sh runs each notebook only here.

Serve it with `python -m http.server -d docs/site` and open http://127.0.0.1:8000 (it also opens from disk).

nbdev renders docs with Quarto (nbs/_quarto.yml), which can't be installed everywhere; this builds the same pages
from registry packages only, with no network at view time:
1. nbdev's own notebook processors (frontmatter, `show_doc` for every exported name, `#| hide`, `#| export`, ...)
   and execnb's CaptureShell run each notebook in a fresh process, as `nbdev_test` does (in the notebook's folder,
   with IN_TEST=1): cells flagged with settings.ini's `tst_flags` (`#| slow`, `#| cuda`) or `#| eval: false` are
   shown but not run (their saved outputs, if any, are kept). Plots become PNG files. The slowest notebooks of the
   last build start first.
2. The result is written as markdown under docs/_md/ and rendered by MkDocs with the Material theme
   (docs/mkdocs.yml). Why MkDocs + Material: pure PyPI, builds a handful of pages in seconds, ships client-side
   (offline) search, a page navigation in the order we give, previous/next links, and a plugin that makes the
   site work from file://; Material is the most used and actively released MkDocs theme.
3. Math is typeset in the browser by MathJax 3 from the npm package `mathjax` (pinned and checksummed, fetched once
   by name with `npm pack` into docs/.cache/, so npm's configured registry, mirror or proxy applies) and served from
   the site itself: no CDN. So is `iframe-worker`, the small shim that Material's offline plugin would otherwise load
   from a CDN. The pages load nothing from the network.

A notebook that fails (half-written, a cell that raises) still gets its page, with the error shown, and a warning
here; `--strict` stops that notebook at its failing cell, as nbdev_test does, and turns the warnings into a failure.
"""
from __future__ import annotations
import argparse, base64, configparser, hashlib, html, json, logging, os, re, shutil, subprocess, sys, tarfile, time
import warnings
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
BUILD_INFO = "_build.json"  # written into the site: what was built, from which inputs, and what went wrong


def settings() -> dict:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT / "settings.ini")
    return dict(cp["DEFAULT"])


# ---------------------------------------------------------------- notebooks and page names

def find_notebooks(nbs: Path) -> list[Path]:
    "Notebooks under `nbs` in reading order: `index.ipynb` first, then by path; `_`/`.` names skipped, as nbdev does."
    found = [p for p in nbs.rglob("*.ipynb")
             if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts)]
    return sorted(found, key=lambda p: (p.relative_to(nbs).as_posix() != "index.ipynb", p.relative_to(nbs).as_posix()))


def page_for(rel: PurePosixPath) -> PurePosixPath:
    "`00_objective.ipynb` -> `objective.md` (built as `objective.html`, the name nbdev's Quarto site and links use)."
    return rel.with_name(re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.name.lower())).with_suffix(".md")


def input_digest(nbs: Path = ROOT / "nbs") -> str:
    "Hash of everything the site is built from, so a test can tell whether docs/site is up to date."
    s = settings()
    files = sorted(p for p in nbs.rglob("*") if not any(x.startswith(("_", ".")) for x in p.relative_to(nbs).parts))
    files += sorted((ROOT / "docs").glob("mkdocs.yml")) + sorted((ROOT / "docs/assets").rglob("*"))
    files += [ROOT / "settings.ini", Path(__file__).resolve()]
    files += sorted((ROOT / s.get("lib_path", "hybrid_ilrl")).rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        if f.is_file(): h.update(f.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- markdown cells: CommonMark/Jupyter -> Python-Markdown

_re_fence = re.compile(r"^(\s*)(`{3,}|~{3,})")
_re_item = re.compile(r"^( *)([*+-]|\d{1,9}[.)])( +|$)")
_re_code_or_dmath = re.compile(r"(`+)(?:.+?)\1|(?<!\\)\$\$(.+?)(?<!\\)\$\$", re.S)


def math_span(tex: str, display: bool) -> str:
    "Raw HTML that MathJax typesets and Python-Markdown leaves alone (every non-alphanumeric character as an entity)."
    enc = "".join(c if c.isalnum() or c == " " else f"&#{ord(c)};" for c in tex.strip())
    o, c = ("&#92;[", "&#92;]") if display else ("&#92;(", "&#92;)")
    return f'<span class="arithmatex">{o}{enc}{c}</span>'


def _display_math(text: str) -> str:
    # Jupyter allows $$...$$ anywhere in a paragraph or list item; Python-Markdown's arithmatex only as its own block.
    return _re_code_or_dmath.sub(lambda m: m.group(0) if m.group(1) else math_span(m.group(2), True), text)


def _split_fences(src: str):
    "Yield (is_fenced_code, text) chunks."
    buf, fence, out = [], None, []
    for line in src.split("\n"):
        m = _re_fence.match(line)
        if fence is None and m:
            if buf: out.append((False, "\n".join(buf)))
            buf, fence = [line], m.group(2)
        elif fence is not None:
            buf.append(line)
            if line.strip().startswith(fence[0] * len(fence)) and set(line.strip()) == {fence[0]}:
                out.append((True, "\n".join(buf)))
                buf, fence = [], None
        else: buf.append(line)
    if buf: out.append((fence is not None, "\n".join(buf)))
    return out


def normalize_md(src: str) -> str:
    """Make Jupyter (CommonMark) markdown mean the same to Python-Markdown: a list, table or code fence may follow a
    paragraph line directly; nested list items are indented by 2 or 3 spaces; `$$...$$` may sit inside a paragraph."""
    src = "\n".join(t if code else _display_math(t) for code, t in _split_fences(src))
    out, fence, delta, stack, in_list, prev_blank, closed = [], None, 0, [], False, True, False
    for line in src.split("\n"):
        if fence is not None:  # inside a fenced code block: shift it with its list item, never touch its text
            out.append(" " * delta + line if delta > 0 else line[min(-delta, len(line) - len(line.lstrip())):])
            s = line.strip()
            if s.startswith(fence[0] * len(fence)) and set(s) == {fence[0]}: fence, closed = None, True
            prev_blank = False
            continue
        if not line.strip():
            out.append(line)
            prev_blank, closed = True, False
            continue
        if closed:  # text right after a code fence: a new paragraph
            out.append("")
            prev_blank, closed = True, False
        indent = len(line) - len(line.lstrip(" "))
        item = _re_item.match(line)
        if in_list and prev_blank and indent == 0 and not item: in_list, stack = False, []
        # CommonMark: a list may interrupt a paragraph, but an ordered one only when it starts at 1
        number = item.group(2)[:-1] if item else ""
        if item and not in_list and not prev_blank and number.isdigit() and int(number) != 1: item = None
        if item and (in_list or indent <= 3):
            if not in_list and not prev_blank: out.append("")
            in_list = True
            while stack and indent < stack[-1]: stack.pop()
            marker = item.group(2).replace(")", ".")
            col = indent + len(item.group(2)) + max(1, len(item.group(3)))
            new = " " * (4 * len(stack)) + marker + " " + line[item.end():]
            stack.append(col)
            out.append(new)
            delta, prev_blank = 0, False
            if _re_fence.match(line[item.end():]): fence = _re_fence.match(line[item.end():]).group(2)
            continue
        m = _re_fence.match(line)
        if in_list and indent > 0 and stack:  # continuation of a list item
            d = max(i for i, c in enumerate(stack) if c <= indent) if any(c <= indent for c in stack) else 0
            base = stack[d] if stack[d] <= indent else indent
            new_indent = 4 * (d + 1) + (indent - base)
            delta = new_indent - indent
            line = " " * new_indent + line.lstrip(" ")
        elif not in_list:
            delta = 0
            row = line.lstrip().startswith("|")
            if (m or row) and not prev_blank and not (row and out and out[-1].lstrip().startswith("|")): out.append("")
        if m: fence = m.group(2)
        out.append(line)
        prev_blank = False
    return "\n".join(out)


_re_quarto_callout = re.compile(r"^:::+\s*\{\s*\.callout-(\w+)[^}]*\}\s*$")
_re_fdiv = re.compile(r"^:::+.*$")


def quarto_divs(src: str) -> str:
    "Quarto callouts (`::: {.callout-note}` ... `:::`) become Material admonitions; other fenced divs are unwrapped."
    out, opened = [], []
    kinds = dict(note="note", tip="tip", warning="warning", important="danger", caution="warning")
    for line in src.split("\n"):
        m = _re_quarto_callout.match(line.strip())
        if m:
            k = kinds.get(m.group(1), "note")
            out += ["", f'<div class="admonition {k}" markdown>', f'<p class="admonition-title">{k.title()}</p>', ""]
            opened.append(True)
            continue
        if _re_fdiv.match(line.strip()):
            if line.strip().strip(":") == "" and opened:
                if opened.pop(): out += ["", "</div>", ""]
            else: opened.append(False)
            continue
        out.append(line)
    return "\n".join(out)


def local_files(src: str, here: Path, nbs: Path) -> list[str]:
    "Files under `nbs` (not notebooks) that markdown `src`, in folder `here`, shows or links: `![](images/curves.png)`."
    found = []
    for ref in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|\b(?:src|href)=[\"']([^\"']+)[\"']", src):
        ref = (ref[0] or ref[1]).split("#")[0].split("?")[0]
        if not ref or re.match(r"^[a-z][\w+.-]*:|^/", ref) or ref.endswith(".ipynb"): continue
        f = (here / ref).resolve()
        if f.is_file() and f.is_relative_to(nbs.resolve()): found.append(f.relative_to(nbs.resolve()).as_posix())
    return found


def rewrite_nb_links(src: str, here: PurePosixPath, pages: dict[str, str]) -> str:
    "Links to other notebooks (`02_logit_grad.ipynb`) or their Quarto pages (`logit_grad.html`) point at our pages."
    by_html = {str(PurePosixPath(p).with_suffix(".html")): p for p in pages.values()}
    def sub(m):
        target, frag = m.group(1), m.group(2) or ""
        if re.match(r"^[a-z]+:", target) or target.startswith("/"): return m.group(0)
        resolved = os.path.normpath((here.parent / target).as_posix())
        page = pages.get(resolved) or by_html.get(resolved)
        if page is None: return m.group(0)
        return f"]({os.path.relpath(page, here.parent.as_posix() or '.')}{frag})"
    return re.sub(r"\]\(([^)\s#]+?\.(?:ipynb|html))(#[^)\s]*)?\)", sub, src)


def linkify(src: str, here: str, anchors: dict[str, tuple[str, str]]) -> str:
    "`token_kl` in prose links to its API entry (like nbdev's doc links), on this site."
    def sub(m):
        name = m.group(1)
        if name not in anchors: return m.group(0)
        page, slug = anchors[name]
        href = f"#{slug}" if page == here else f"{os.path.relpath(page, os.path.dirname(here) or '.')}#{slug}"
        return f"[`{name}`]({href})"
    out = []
    for code, chunk in _split_fences(src):
        if code:
            out.append(chunk)
            continue
        lines = [l if l.lstrip().startswith("#") else re.sub(r"(?<![\[`\w])`([A-Za-z_][\w.]*)`(?![`\]])", sub, l)
                 for l in chunk.split("\n")]
        out.append("\n".join(lines))
    return "\n".join(out)


# ---------------------------------------------------------------- one notebook -> markdown (runs in a worker process)

_re_ansi = re.compile(r"\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])")
_re_tb = re.compile(r"Traceback \(most recent call last\)|^Cell In\[\d+\]", re.M)
_re_qdir = re.compile(r"^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")


def _pre(text: str, cls: str) -> str:
    # \r: as a terminal shows it (progress bars)
    text = "\n".join(l.rstrip("\r").rsplit("\r", 1)[-1] for l in _re_ansi.sub("", text).split("\n"))
    return f'<pre class="{cls}"><code>{html.escape(text.rstrip())}</code></pre>'


def _txt(v) -> str: return "".join(v) if isinstance(v, list) else str(v)


def _fence(src: str, lang: str = "python") -> str:
    n = max([3] + [len(r) + 1 for r in re.findall(r"`{3,}", src)])
    return f"{'`' * n}{lang}\n{src}\n{'`' * n}"


def _source_line(url: str, name: str) -> str:
    "show_doc run inside a notebook can't know the line (`#LNone`): find the definition in the exported module."
    m = re.search(r"/blob/[^/]+/(.+?\.py)#LNone$", url)
    if not m: return url
    base = url[: -len("#LNone")]
    f = ROOT / m.group(1)
    if f.is_file():
        pat = re.compile(rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name.split('.')[-1])}\b")
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if pat.match(line): return f"{base}#L{i}"
    return base


def _show_doc_md(md: str) -> tuple[str, str | None]:
    h = re.search(r"^#{1,6}\s+(\S+)\s*$", md, re.M)
    name = h.group(1) if h else None
    md = re.sub(r"\]\((\S+?#LNone)\)", lambda m: f"]({_source_line(m.group(1), name or '')})", md)
    return md, name


def render_notebook(job: dict) -> dict:
    "Process and run one notebook; return its page as markdown segments (kind, text), plus what it documents."
    t0 = time.time()
    os.chdir(job["root"])  # nbdev's get_config() looks for settings.ini from here (cells run in the notebook's folder)
    os.environ["IN_TEST"] = "1"  # as nbdev_test sets it
    if job["root"] not in sys.path: sys.path.insert(0, job["root"])  # as nbdev_test's basepath
    path, page = Path(job["path"]), PurePosixPath(job["page"])
    res = dict(notebook=job["rel"], page=job["page"], title=Path(job["rel"]).stem, description="", segments=[],
               documented=[], errors=[], tracebacks=[], skipped=[], assets=[], seconds=0.0)
    try:
        _render(job, path, page, res)
    except Exception as e:  # a notebook that can't be processed at all still gets a page that says why
        import traceback
        res["errors"].append(f"could not render: {type(e).__name__}: {e}")
        res["tracebacks"].append(traceback.format_exc())
        res["documented"] = []  # nothing on the page to link to
        res["segments"] = [("raw", '<div class="admonition failure"><p class="admonition-title">This notebook could '
                                   'not be rendered</p></div>'), ("raw", _pre(traceback.format_exc(), "nb-error"))]
    res["seconds"] = round(time.time() - t0, 2)
    return res


def _render(job, path, page, res):
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor, Processor
    from nbdev.frontmatter import FrontmatterProc
    from nbdev import processors as P

    import traceback
    from fastcore.xtras import working_directory
    flags, execute, stop = job["tst_flags"], job["execute"], job["stop_on_error"]

    class run_cells(Processor):
        """Run the code cells in order in one fresh shell, as nbdev_test does, except cells flagged with `tst_flags`
        (`#| slow`, `#| cuda`) or `#| eval: false`; with `stop`, none after the first that raises. With --no-exec (or
        `skip_exec: true` in the frontmatter), run only what nbdev's Quarto build runs (exports, imports, show_doc)
        and keep the other cells' saved outputs."""
        def begin(self):
            fm = getattr(self.nb, "frontmatter_", {}) or {}
            self.full = execute and str(fm.get("skip_exec", "")).lower() not in ("true", "1")
            self.k = CaptureShell(path=path.parent, timeout=job["cell_timeout"] or None)
            self.k.run_cell("from nbdev.showdoc import show_doc")
            self.failed = False

        def __call__(self, cell):
            if cell.cell_type != "code" or not cell.source: return
            if re.search(r"\bnbdev_export\(|\bnotebook2script\(", cell.source):  # no exporting here
                cell.outputs = []
                return
            why = [f"#| {f}" for f in flags if f in cell.directives_]
            if cell.directives_.get("eval:", [""])[0].lower() == "false": why.append("#| eval: false")
            if stop and self.failed: why = ["an earlier cell failed"]
            if why:
                cell.skipped_ = why
                res["skipped"].append(getattr(cell, "nb_idx_", cell.idx_))
                return
            if not self.full:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if not P._do_eval(cell): return
            cell.outputs = []
            with working_directory(path.parent): self.k.cell(cell)  # where nbdev_test runs it
            if self.k.exc is not None:
                e, where = self.k.exc, f"cell {getattr(cell, 'nb_idx_', '(show_doc)')}"
                code = [l.strip() for l in cell.source.splitlines() if l.strip() and not l.lstrip().startswith("#|")]
                first = code[0] if code else ""
                msg = str(e).splitlines()[0] if str(e) else ""
                res["errors"].append(f"{where} `{first[:50]}` raised {type(e).__name__}: {msg}")
                tb = e.__traceback__
                while tb is not None and "IPython" in tb.tb_frame.f_code.co_filename:  # the cell's own frames only
                    tb = tb.tb_next
                tb_text = "".join(traceback.format_exception(type(e), e, tb))
                res["tracebacks"].append(f"{where}:\n{cell.source}\n\n{tb_text}")
                self.failed = True

    nb = read_nb(path)
    nb.path_ = str(path)
    for i, c in enumerate(nb.cells): c.nb_idx_ = i  # the cell's number in the notebook, for messages
    procs = [FrontmatterProc, P.populate_language, P.add_show_docs, P.strip_ansi, P.hide_line, P.filter_stream_,
             P.rm_header_dash, P.clean_show_doc, run_cells, P.rm_export, P.ai_magics, P.clean_magics, P.hide_,
             P.mv_exports, P.strip_hidden_metadata]
    NBProcessor(nb=nb, procs=procs).process()
    fm = getattr(nb, "frontmatter_", {}) or {}
    res["title"] = str(fm.get("title", res["title"]))
    res["description"] = str(fm.get("description", "") or "")

    files_dir = page.with_name(page.stem + "_files")
    nimg, segs = 0, res["segments"]
    segs.append(("md", f"# {res['title']}"))
    if res["description"]: segs.append(("md", "> " + _display_math(res["description"])))
    for cell in nb.cells:
        if cell.cell_type == "raw": continue
        if cell.cell_type == "markdown":
            src = cell.source
            for name, data in (cell.get("attachments") or {}).items():
                for mime, b64 in data.items():
                    if mime.startswith("image/"):
                        nimg += 1
                        safe = re.sub(r"[^\w.-]", "_", name)
                        fn = files_dir / f"attachment{nimg}_{safe}"
                        (Path(job["md_dir"]) / fn).parent.mkdir(parents=True, exist_ok=True)
                        (Path(job["md_dir"]) / fn).write_bytes(base64.b64decode(_txt(b64)))
                        src = src.replace(f"attachment:{name}", str(PurePosixPath(fn).relative_to(page.parent)))
            res["assets"] += local_files(src, path.parent, Path(job["nbs"]))
            src = rewrite_nb_links(normalize_md(quarto_divs(src)), PurePosixPath(job["rel"]), job["pages"])
            segs.append(("md", src))
            continue
        # code cell: Quarto options left in the source by nbdev (`#| echo: false` on show_doc cells, ...)
        lines, opts = cell.source.split("\n"), {}
        while lines and _re_qdir.match(lines[0]):
            k, v = _re_qdir.match(lines.pop(0)).groups()
            opts[k] = v.lower()
        if opts.get("include") == "false": continue
        src = "\n".join(lines).strip("\n")
        if src and opts.get("echo") != "false": segs.append(("code", _fence(src)))
        skipped = getattr(cell, "skipped_", None)
        if skipped:
            saved = " Output below: as saved in the notebook." if cell.get("outputs") else ""
            why = html.escape(", ".join(skipped))
            segs.append(("raw", f'<p class="nb-skipped">Not run in the docs build ({why}).{saved}</p>'))
        if opts.get("output") == "false": continue
        outs = cell.get("outputs", []) or []
        streams = "".join(_txt(o.get("text", "")) for o in outs if o.get("output_type") == "stream")
        has_err = any(o.get("output_type") == "error" for o in outs)
        for out in outs:
            ot = out.get("output_type")
            if ot == "stream":
                text = _txt(out.get("text", ""))
                tb_printed = has_err and _re_tb.search(_re_ansi.sub("", text))  # IPython printed the traceback
                cls = "nb-error" if tb_printed else "nb-output" if out.get("name") != "stderr" else "nb-stderr"
                segs.append(("raw", _pre(text, cls)))
            elif ot == "error":
                if _re_tb.search(_re_ansi.sub("", streams)): continue  # shown above, as IPython printed it
                tb = "\n".join(_txt(t) for t in out.get("traceback", [])) or f"{out.get('ename')}: {out.get('evalue')}"
                segs.append(("raw", _pre(tb, "nb-error")))
            elif ot in ("execute_result", "display_data"):
                data, meta = out.get("data", {}), out.get("metadata", {}) or {}
                img = next((m for m in ("image/png", "image/jpeg", "image/svg+xml") if m in data), None)
                if img:
                    nimg += 1
                    ext = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}[img]
                    fn = files_dir / f"cell{cell.idx_}_{nimg}.{ext}"
                    dest = Path(job["md_dir"]) / fn
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if img == "image/svg+xml": dest.write_text(_txt(data[img]))
                    else: dest.write_bytes(base64.b64decode(_txt(data[img])))
                    w = (meta.get(img) or {}).get("width")
                    attrs = " .nb-plot" + (f' width="{int(w)}"' if w else "")
                    alt = f"output of cell {cell.idx_}" if data.get("text/plain") is None else \
                        re.sub(r"[\[\]<>\n]", " ", _txt(data["text/plain"]))[:80]
                    segs.append(("raw", f"![{alt}]({PurePosixPath(fn).relative_to(page.parent)}){{{attrs} }}"))
                elif "text/markdown" in data:
                    md, name = _show_doc_md(_txt(data["text/markdown"]))
                    if name: res["documented"].append(name)
                    segs.append(("doc", md))
                elif "text/html" in data:
                    html_out = _txt(data["text/html"]).strip()
                    segs.append(("raw", f'<div class="nb-output" markdown="0">\n{html_out}\n</div>'))
                elif "text/latex" in data:
                    tex = _txt(data["text/latex"]).strip().strip("$")
                    segs.append(("raw", "<p>" + math_span(tex, True) + "</p>"))
                elif "text/plain" in data:
                    segs.append(("raw", _pre(_txt(data["text/plain"]), "nb-output")))
    src_url = job.get("source_url")
    if src_url:
        segs.append(("raw", f'<p class="nb-source">This page is generated from <a href="{html.escape(src_url)}">'
                            f'<code>{html.escape(job["src_label"])}</code></a>.</p>'))


# ---------------------------------------------------------------- JavaScript from npm packages, served by the site

# name -> (version, npm's integrity, files kept: paths or folders inside the package, and where they go in the site)
NPM = {
    "mathjax": ("3.2.2",
                "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
                # the combined tex-svg.js plus the components it loads on demand (not the other combined builds)
                lambda p: p.parts[0] == "es5" and (len(p.parts) > 2 or p.name == "tex-svg.js"), "assets/mathjax"),
    # Material's offline plugin loads this Worker shim from a CDN unless the site has it: search from file://
    "iframe-worker": ("1.0.4",
                      "sha512-roeaaI+Lg1LJNfgpCjoRe/+WzEjy9+Z08LoEvu85MCPbBjwm+qXz8Ag5U05lHa6V1CysZyGzE0SOkAtSUA5q7Q==",
                      lambda p: p.parts[0] == "shim", "assets/iframe-worker"),
}
MATHJAX_VERSION = NPM["mathjax"][0]


def _sri(path: Path) -> str: return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def npm_pack(name: str, version: str, cache: Path) -> Path:
    "`npm pack name@version` into `cache`: fetched by name, so npm's configured registry, mirror or proxy applies."
    npm = shutil.which("npm")
    if not npm:
        sys.exit(f"build_docs: npm is needed once, to fetch {name}@{version} into {cache} "
                 f"(Debian: apt-get install npm); or put the file `npm pack {name}@{version}` makes there")
    print(f"fetching {name}@{version} with npm pack ...", flush=True)
    r = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", str(cache), "--json"],
                       capture_output=True, text=True)
    if r.returncode: sys.exit(f"build_docs: `npm pack {name}@{version}` failed:\n{r.stderr.strip()}")
    return cache / json.loads(r.stdout)[0]["filename"]


def npm_files(name: str, cache: Path) -> Path:
    "The files we serve from npm package `name` (pinned, checksummed), unpacked once from its tarball in `cache`."
    version, integrity, keep, _ = NPM[name]
    dest = cache / f"{name}-{version}"
    if (dest / ".complete").is_file(): return dest
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / f"{name}-{version}.tgz"
    if not tgz.is_file() or _sri(tgz) != integrity: tgz = npm_pack(name, version, cache)
    if _sri(tgz) != integrity: sys.exit(f"build_docs: {tgz} does not match the pinned checksum; delete it and retry")
    tmp = cache / f"{name}-{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(tgz) as tf:
        for m in tf.getmembers():
            p = PurePosixPath(m.name)
            if not m.isfile() or p.parts[0] != "package" or ".." in p.parts: continue
            rel = PurePosixPath(*p.parts[1:])
            if not (keep(rel) or rel.name == "LICENSE"): continue
            inner = PurePosixPath(*rel.parts[1:]) if len(rel.parts) > 1 else rel
            out = tmp / (rel.name if rel.name == "LICENSE" else inner)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tf.extractfile(m).read())
    (tmp / ".complete").write_text(integrity)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# ---------------------------------------------------------------- the whole site

class _Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.msgs = []
    def emit(self, record): self.msgs.append(record.getMessage())


def last_seconds(out: Path) -> dict[str, float]:
    "Seconds each notebook took in the last build into `out` (none on a fresh clone)."
    try: return {p["notebook"]: float(p["seconds"]) for p in json.loads((out / BUILD_INFO).read_text())["pages"]}
    except (OSError, ValueError, KeyError, TypeError): return {}


def print_failure(r: dict):
    "A notebook's errors with their tracebacks, fenced as nbdev_test prints them."
    fence = "=" * 75
    for tb in r["tracebacks"] or r["errors"]:
        tb = _re_ansi.sub("", tb).rstrip()
        print(f"\nFAILED {r['notebook']}\n{fence}\n{tb}\n{fence}", file=sys.stderr, flush=True)


def build(nbs: Path, out: Path, md_dir: Path, workers: int = 2, execute: bool = True, strict: bool = False,
          cell_timeout: int = 0) -> dict:
    t0 = time.time()
    s = settings()
    nbs, out, md_dir = nbs.resolve(), out.resolve(), md_dir.resolve()
    digest = input_digest(nbs)  # before reading anything: a notebook that changes during the build makes it stale
    notebooks = find_notebooks(nbs)
    if not notebooks: sys.exit(f"build_docs: no notebooks in {nbs}")
    pages, used = {}, set()
    for p in notebooks:
        rel = PurePosixPath(p.relative_to(nbs).as_posix())
        pg = page_for(rel)
        if pg in used: pg = rel.with_suffix(".md")  # two notebooks, one name: keep the number
        used.add(pg)
        pages[str(rel)] = str(pg)

    shutil.rmtree(md_dir, ignore_errors=True)
    md_dir.mkdir(parents=True)
    flags = s.get("tst_flags", "").split()
    git_url, branch = s.get("git_url", "").rstrip("/"), s.get("branch", "main")
    jobs = []
    for p in notebooks:
        rel = str(PurePosixPath(p.relative_to(nbs).as_posix()))
        in_repo = p.resolve().is_relative_to(ROOT)
        label = p.resolve().relative_to(ROOT).as_posix() if in_repo else rel
        jobs.append(dict(path=str(p), rel=rel, page=pages[rel], pages=pages, md_dir=str(md_dir), root=str(ROOT),
                         nbs=str(nbs), tst_flags=flags, execute=execute, stop_on_error=strict,
                         cell_timeout=cell_timeout, src_label=label,
                         source_url=f"{git_url}/blob/{branch}/{label}" if in_repo and git_url else None))
    n = max(1, min(workers, len(jobs)))
    last = last_seconds(out)  # the slowest first, so that no long notebook starts last and runs alone
    start = sorted(range(len(jobs)), key=lambda i: -last.get(jobs[i]["rel"], 0.0))
    print(f"running {len(jobs)} notebooks from {nbs} ({n} at a time"
          + (", the slowest of the last build first" if last else "") + ") ...", flush=True)
    def report(r):  # as each notebook finishes, so a slow one shows
        note = f"  ({len(r['skipped'])} cells not run)" if r["skipped"] else ""
        html_page = PurePosixPath(r["page"]).with_suffix(".html")
        print(f"  {r['notebook']:<28} -> {html_page!s:<24} {r['seconds']:6.1f} s{note}", flush=True)
        for e in r["errors"]: print(f"  ! {r['notebook']}: {e}", file=sys.stderr, flush=True)
        if strict and r["errors"]: print_failure(r)
        return r
    fresh = dict(max_tasks_per_child=1) if sys.version_info >= (3, 11) else {}  # one new process per notebook
    with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), **fresh) as ex:
        futs = {ex.submit(render_notebook, jobs[i]): i for i in start}
        done = {futs[f]: report(f.result()) for f in as_completed(futs)}
    results = [done[i] for i in range(len(jobs))]

    # API anchors: every name that a show_doc rendered, on the page that rendered it (python-markdown's toc slugs)
    from markdown.extensions.toc import slugify
    anchors = {}
    for r in results:
        for name in r["documented"]: anchors.setdefault(name, (r["page"], slugify(name, "-")))
    for r in results:
        parts = [linkify(t, r["page"], anchors) if k == "md" else t for k, t in r["segments"]]
        desc = json.dumps(re.sub(r"[`$]", "", r["description"]))
        meta = f"---\ntitle: {json.dumps(r['title'])}\n" + (f"description: {desc}\n" if r["description"] else "")
        meta += "---\n\n"
        dest = md_dir / r["page"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(meta + "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n")

    # files the notebooks' markdown shows or links (nbs/images/...), at the same place relative to their pages
    for rel in sorted({a for r in results for a in r["assets"]}):
        (md_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nbs / rel, md_dir / rel)
    # assets: ours, and MathJax + the Worker shim from npm packages
    shutil.copytree(ROOT / "docs/assets", md_dir / "assets", dirs_exist_ok=True)
    for name, (*_, where) in NPM.items():
        shutil.copytree(npm_files(name, ROOT / "docs/.cache"), md_dir / where, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".complete"))

    # navigation in reading order: folders of notebooks become sections
    nav = []
    for r in results:
        parts = PurePosixPath(r["page"]).parts
        title = "Home" if r["page"] == "index.md" else r["title"]
        where = nav
        for folder in parts[:-1]:
            name = re.sub(r"^\d+[a-zA-Z0-9]*_", "", folder).replace("_", " ").capitalize()
            sec = next((x for x in where if isinstance(x, dict) and name in x and isinstance(x[name], list)), None)
            if sec is None:
                sec = {name: []}
                where.append(sec)
            where = sec[name]
        where.append({title: r["page"]})

    from mkdocs.config import load_config
    from mkdocs.commands.build import build as mkdocs_build
    count = _Count()
    logging.getLogger("mkdocs").addHandler(count)
    social = [dict(icon="fontawesome/brands/github", link=git_url, name="Source on GitHub")] if git_url else []
    cfg = load_config(config_file=str(ROOT / "docs/mkdocs.yml"), docs_dir=str(md_dir), site_dir=str(out), nav=nav,
                      site_name=s.get("title", "docs"), site_description=s.get("description", ""),
                      copyright=f"Copyright © {s['copyright']}" if s.get("copyright") else None,
                      extra=dict(social=social, polyfills=["assets/iframe-worker/index.js"]))
    cfg.plugins.on_startup(command="build", dirty=False)
    try: mkdocs_build(cfg)
    finally: cfg.plugins.on_shutdown()
    logging.getLogger("mkdocs").removeHandler(count)

    errors = [f"{r['notebook']}: {e}" for r in results for e in r["errors"]] + [f"mkdocs: {m}" for m in count.msgs]
    info = dict(digest=digest, executed=execute, seconds=round(time.time() - t0, 1), mathjax=MATHJAX_VERSION,
                errors=errors,
                pages=[dict(notebook=r["notebook"], page=str(PurePosixPath(r["page"]).with_suffix(".html")),
                            title=r["title"],
                            documented=r["documented"], errors=r["errors"], skipped_cells=r["skipped"],
                            seconds=r["seconds"]) for r in results])
    (out / BUILD_INFO).write_text(json.dumps(info, indent=1))
    print(f"built {len(results)} pages into {out} in {info['seconds']} s"
          + (f", with {len(errors)} warnings (above)" if errors else ""))
    print("slowest notebooks: " + ", ".join(f"{r['notebook']} {r['seconds']:.0f} s"
                                            for r in sorted(results, key=lambda r: -r["seconds"])[:4]))
    if strict and errors:
        failed = [r["notebook"] for r in results if r["errors"]]
        why = ("; notebooks that failed (tracebacks above):\n\t" + "\n\t".join(failed) if failed
               else ":\n\t" + "\n\t".join(errors))
        sys.exit(f"build_docs --strict: {len(errors)} warnings{why}")
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nbs", type=Path, default=ROOT / "nbs", help="folder of notebooks (default: nbs/)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/site", help="where the site goes (default: docs/site/)")
    ap.add_argument("--md", type=Path, default=None, help="where the intermediate markdown goes (default: docs/_md/)")
    ap.add_argument("--workers", type=int, default=2, help="notebooks run at once (default: 2)")
    ap.add_argument("--no-exec", action="store_true", help="don't run the notebooks: use the outputs saved in them")
    ap.add_argument("--strict", action="store_true", help="fail if a cell raises or MkDocs warns")
    ap.add_argument("--cell-timeout", type=int, default=0,
                    help="stop a cell after this many seconds (an error on its page); 0: no limit")
    a = ap.parse_args(argv)
    default_out = a.out.resolve() == (ROOT / "docs/site").resolve()
    md = a.md or (ROOT / "docs/_md" if default_out else a.out.resolve().with_name(a.out.name + "_md"))
    build(a.nbs, a.out, md, workers=a.workers, execute=not a.no_exec, strict=a.strict, cell_timeout=a.cell_timeout)


if __name__ == "__main__":
    main()
