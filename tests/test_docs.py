"""The docs site built by `python tools/build_docs.py`, checked on disk and in a real browser.

The browser is Debian's `chromium`, headless, driven over the DevTools protocol by Playwright's Python package
(no browser download). Without chromium the in-browser checks fail (scripts/test.sh installs it), unless
HYBRID_ILRL_SKIP_BROWSER=1 says to skip them.
Screenshots go to docs/site/_screenshot*.png (git-ignored): look at them.
"""
import base64, functools, html.parser, importlib.util, json, os, re, shutil, subprocess, sys, tempfile, threading
import warnings
import http.server
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, unquote

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs/site"
CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if Path(p).exists()), None)
SKIP_BROWSER = os.environ.get("HYBRID_ILRL_SKIP_BROWSER") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def _build_docs_module():
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "tools/build_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bd = _build_docs_module()


def _build(*args):
    r = subprocess.run([sys.executable, str(ROOT / "tools/build_docs.py"), *args], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, f"build_docs failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="session")
def site():
    """docs/site, its build info, and the notebooks it was built from. Built here unless it is up to date with its
    inputs (scripts/test.sh builds it just before); built again if a notebook changed during the build (others at
    work)."""
    info_f = SITE / bd.BUILD_INFO
    def fresh():
        nbs = [p.relative_to(ROOT / "nbs").as_posix() for p in bd.find_notebooks(ROOT / "nbs")]
        info = json.loads(info_f.read_text()) if info_f.is_file() else {}
        return (info.get("digest") == bd.input_digest() and info.get("executed")), nbs
    ok, nbs = fresh()
    for _ in range(2):
        if ok: break
        _build()
        ok, nbs = fresh()
    if not ok:
        warnings.warn("the notebooks kept changing while docs/site was built: checking the last build")
        nbs = [p["notebook"] for p in json.loads(info_f.read_text())["pages"]]
    return SITE, json.loads(info_f.read_text()), nbs


@contextmanager
def serve(root: Path):
    "A static server for `root` on 127.0.0.1, on a free port."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try: yield f"http://127.0.0.1:{srv.server_port}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="session")
def browser_ctx():
    if SKIP_BROWSER: pytest.skip("HYBRID_ILRL_SKIP_BROWSER=1: the in-browser docs checks are skipped")
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: `apt-get install chromium` (scripts/test.sh does it), "
                    "or set HYBRID_ILRL_SKIP_BROWSER=1 to skip the in-browser docs checks", pytrace=False)
    try: from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise ImportError("the docs tests drive chromium with playwright: pip install -e '.[dev]'") from e
    with sync_playwright() as p, tempfile.TemporaryDirectory() as user_data:
        ctx = p.chromium.launch_persistent_context(user_data, executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        try: yield ctx
        finally: ctx.close()


# TeX that MathJax should have typeset, left in the visible text: $$, \frac and friends, \( \) \[ \], $...$
RAW_TEX = (r"\$\$|\\(?:frac|mathbb|mathrm|sum|log|beta|lambda|theta|pi|nabla|left|right|Big|big|cdot|mid|qquad)\b"
           r"|\\[()\[\]]|\$[^$\s][^$\n]*\$")


class Page:
    "One page opened in chromium, recording every request, failure and script error."
    def __init__(self, ctx, base, path):
        self.base, self.page = base, ctx.new_page()
        self.requests, self.failed, self.errors = [], [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} (HTTP {r.status})"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(base + path, wait_until="load")
        self.page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                    timeout=30_000)
        self.page.evaluate("() => MathJax.startup.promise.then(() => true)")
        self.page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)

    def math(self):
        "Formulas in the markdown vs typeset by MathJax, MathJax's own errors, and TeX left in the visible text."
        return self.page.evaluate("""raw_tex => {
            const main = document.querySelector('article') || document.body;
            const clone = main.cloneNode(true);
            clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
            const probe = document.createElement('div');
            probe.style.position = 'absolute';
            probe.style.left = '-99999px';
            probe.appendChild(clone);
            document.body.appendChild(probe);
            const text = probe.innerText;
            probe.remove();
            return {source: main.querySelectorAll('.arithmatex').length,
                    typeset: main.querySelectorAll('.arithmatex mjx-container').length,
                    errors: main.querySelectorAll('mjx-merror').length,
                    raw: (text.match(new RegExp(raw_tex, 'g')) || [])};
        }""", RAW_TEX)

    def images(self):
        return self.page.evaluate("""() => [...document.querySelectorAll('article img')].map(i => (
            {src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth,
             plot: i.classList.contains('nb-plot')}))""")

    def external(self):
        return [u for u in self.requests if not u.startswith(self.base) and not u.startswith(("data:", "blob:"))]

    def close(self): self.page.close()


def check_page(pg, name):
    "What every page must satisfy in the browser."
    m = pg.math()
    assert m["source"] == m["typeset"], f"{name}: {m['source']} formulas, {m['typeset']} typeset by MathJax"
    assert m["errors"] == 0, f"{name}: {m['errors']} MathJax errors (unknown macro?)"
    assert not m["raw"], f"{name}: raw TeX in the visible text: {m['raw'][:5]}"
    bad = [i for i in pg.images() if not i["ok"]]
    assert not bad, f"{name}: images that did not load: {bad}"
    assert not pg.external(), f"{name}: the page loaded from the network: {pg.external()}"
    assert not pg.failed, f"{name}: failed requests: {pg.failed}"
    assert not pg.errors, f"{name}: script errors: {pg.errors}"
    return m


# ---------------------------------------------------------------- on disk

class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids, self.loads = [], set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("id", "name"):
            if a.get(k): self.ids.add(a[k])
        for k in ("href", "src"):
            if a.get(k) is not None: self.refs.append((tag, a[k]))
        if (tag in ("script", "img", "iframe", "source", "video", "audio") and a.get("src")) or \
           (tag == "link" and a.get("href") and "stylesheet" in (a.get("rel") or "") + " " + (a.get("as") or "")):
            self.loads.append(a.get("src") or a.get("href"))


def crawl(site: Path):
    "Every internal href/src of every page that doesn't resolve (no such file or #anchor), and every external load."
    parsed = {}
    for f in site.rglob("*.html"):
        parsed[f.resolve()] = p = _Refs()
        p.feed(f.read_text(errors="replace"))
    broken, external = [], []
    for f, p in parsed.items():
        for tag, ref in p.refs:
            u = urlsplit(ref)
            if u.scheme or ref.startswith("//"):
                continue
            base = site.resolve() if u.path.startswith("/") else f.parent  # 404.html uses root-absolute paths
            target = f if not u.path else (base / unquote(u.path).lstrip("/")).resolve()
            if u.path.endswith("/") or target.is_dir(): target = target / "index.html"
            if not target.is_file():
                broken.append(f"{f.name}: {ref} (no such file)")
                continue
            if u.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else set()
                if unquote(u.fragment) not in ids: broken.append(f"{f.name}: {ref} (no such anchor)")
        external += [f"{f.name}: {ref}" for ref in p.loads
                     if urlsplit(ref).scheme in ("http", "https") or ref.startswith("//")]
    return broken, external, parsed


def _slug(name):
    from markdown.extensions.toc import slugify
    return slugify(name, "-")  # Python-Markdown's heading ids, as the build uses


def _ids(f: Path):
    p = _Refs()
    p.feed(f.read_text())
    return p.ids


def page_of(info, name):
    "The page whose API reference documents `name` (so no test names a notebook that may be renumbered)."
    page = next((p["page"] for p in info["pages"] if name in p["documented"]), None)
    assert page, f"no page documents {name}"
    return page


def test_every_notebook_has_a_page_in_reading_order(site):
    root, info, nbs = site
    assert [p["notebook"] for p in info["pages"]] == nbs and nbs[0] == "index.ipynb"
    names = [str(bd.page_for(PurePosixPath(n)).with_suffix(".html")) for n in nbs]
    if len(set(names)) == len(names): assert [p["page"] for p in info["pages"]] == names  # build_docs' naming rule
    for p in info["pages"]: assert (root / p["page"]).is_file(), p
    # the navigation lists the pages in that order
    links = re.findall(r'<a href="([^"#]+\.html)"\s+class="md-nav__link', (root / "index.html").read_text())
    order = list(dict.fromkeys(l.lstrip("./") for l in links))
    assert [o for o in order if o in {p["page"] for p in info["pages"]}] == [p["page"] for p in info["pages"]]


def test_internal_links_resolve_and_nothing_loads_from_the_network(site):
    root, *_ = site
    broken, external, parsed = crawl(root)
    assert len(parsed) >= 3
    assert not broken, "broken internal links:\n" + "\n".join(broken[:30])
    assert not external, "pages load resources from the network:\n" + "\n".join(external[:30])
    assert (root / "assets/mathjax/tex-svg.js").is_file()


def test_api_reference_for_every_exported_name(site):
    "Each numbered notebook's page documents every function and class its module exports (nbdev's show_doc)."
    import inspect, importlib
    root, info, _ = site
    lib = bd.settings().get("lib_name", "hybrid_ilrl")
    checked = 0
    for p in info["pages"]:
        nb = nbformat.read(ROOT / "nbs" / p["notebook"], as_version=4)
        exp = next((m.group(1) for c in nb.cells if c.cell_type == "code"
                    for m in [re.search(r"^#\|\s*default_exp\s+(\S+)", c.source, re.M)] if m), None)
        if exp is None: continue
        try: mod = importlib.import_module(f"{lib}.{exp}")
        except Exception: continue  # a notebook being written whose module doesn't import yet: nbdev_test reports it
        objs = {n: getattr(mod, n, None) for n in getattr(mod, "__all__", [])}
        names = [n for n, o in objs.items() if (inspect.isfunction(o) or inspect.isclass(o))
                 and getattr(o, "__module__", None) == mod.__name__ and o.__name__ == n]  # defined there, not an alias
        ids = _ids(root / p["page"])
        missing = [n for n in names if _slug(n) not in ids]
        assert not missing, f"{p['page']}: no API entry for {missing}"
        checked += len(names)
    assert checked >= 10  # 00_objective alone exports a dozen


def test_markdown_normalization():
    "Jupyter markdown (CommonMark) that Python-Markdown reads differently is rewritten to mean the same."
    import markdown
    src = ("Para\n* item $a*b*c$\n  * nested by two\n* item 2\n\n"
           "Table right after text:\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
           "Display math in a paragraph $$\\frac{a_1}{b_2}$$ and `$$code$$` stays.\n"
           "```python\nx = '$$'\n```\nText after the fence.\n"
           "In 2024. this\n2024. is no list")
    out = markdown.markdown(bd.normalize_md(src), extensions=["tables", "pymdownx.superfences", "pymdownx.arithmatex"],
                            extension_configs={"pymdownx.arithmatex": {"generic": True}})
    assert re.search(r"<li>item .*<ul>\s*<li>nested by two</li>", out, re.S), out
    assert "<table>" in out and "<td>1</td>" in out, out
    assert out.count('class="arithmatex"') == 2 and "&#92;[&#92;frac" in out, out
    assert "<code>$$code$$</code>" in out and "'$$'</span>" in out, out  # code is left alone
    assert "<p>Text after the fence.\nIn 2024. this\n2024. is no list</p>" in out and "<ol>" not in out, out


# ---------------------------------------------------------------- in the browser

def test_derivation_page_in_chromium(site, browser_ctx):
    root, info, _ = site
    objective = page_of(info, "token_kl")
    with serve(root) as base:
        pg = Page(browser_ctx, base, objective)
        try:
            pg.page.screenshot(path=str(root / "_screenshot.png"))
            m = check_page(pg, objective)
            assert m["typeset"] >= 10, m  # the derivation is mostly math
            assert pg.page.locator("h3#token_kl").count() == 1  # show_doc's API entry
            # the first display formula really is drawn: an SVG of non-trivial size
            box = pg.page.locator("mjx-container[display='true'] svg").first.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 10, box
            assert pg.page.locator("input.md-search__input").count() == 1  # a search box
        finally: pg.close()


def test_every_page_in_chromium(site, browser_ctx):
    root, info, _ = site
    shot = False
    with serve(root) as base:
        for p in info["pages"]:
            pg = Page(browser_ctx, base, p["page"])
            try:
                check_page(pg, p["page"])
                plots = pg.page.locator("img.nb-plot")
                if plots.count() and not shot:
                    plots.first.scroll_into_view_if_needed()
                    pg.page.screenshot(path=str(root / "_screenshot_plot.png"))
                    shot = True
            finally: pg.close()


# the notebooks that teach with a figure (issue 15), each found by a name its API reference documents
FIGURE_PAGES = dict(objective="token_kl", decomposition="hybrid_surrogate", logit_grad="kl_grad",
                    variance="grad_variance")


def test_teaching_pages_have_a_figure_on_disk(site):
    root, info, _ = site
    for what, name in FIGURE_PAGES.items():
        page = page_of(info, name)
        found = re.findall(r'<img[^>]*class="nb-plot"[^>]*>', (root / page).read_text())
        assert found, f"{page} (the {what} notebook) shows no figure"


def test_teaching_pages_show_a_figure_in_chromium(site, browser_ctx):
    "The derivation notebooks and the variance notebook each show at least one drawn figure in the browser."
    root, info, _ = site
    with serve(root) as base:
        for what, name in FIGURE_PAGES.items():
            page = page_of(info, name)
            pg = Page(browser_ctx, base, page)
            try:
                plots = [i for i in pg.images() if i["plot"]]
                assert plots, f"{page} (the {what} notebook) shows no figure"
                assert all(i["ok"] and i["w"] >= 300 for i in plots), f"{page}: figures not drawn: {plots}"
            finally: pg.close()


def test_search_finds_an_api_entry(site, browser_ctx):
    root, info, _ = site
    with serve(root) as base:
        pg = Page(browser_ctx, base, "index.html")
        try:
            box = pg.page.locator("input.md-search__input")
            box.click()
            for _ in range(20):  # the index loads in a Web Worker: a query typed before it is ready gets no answer
                box.fill("")
                pg.page.keyboard.type("token_kl")
                try:
                    pg.page.wait_for_selector(".md-search-result__item", timeout=1_000)
                    break
                except Exception: pass
            else: pytest.fail("the search box never showed a result for token_kl")
            hrefs = pg.page.eval_on_selector_all(".md-search-result__item a",
                                                 "as => as.map(a => a.getAttribute('href'))")
            assert any(page_of(info, "token_kl") in h for h in hrefs), hrefs
            assert not pg.external() and not pg.failed, (pg.external(), pg.failed)
        finally: pg.close()


# ---------------------------------------------------------------- a small site from notebooks made here

def _nb(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "python3", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_markdown_cell(s[3:]) if s.startswith("md:") else nbformat.v4.new_code_cell(s)
                for s in cells]
    return nb


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory):
    "Notebooks with every feature the build handles: plots, show_doc, hide/export/slow/cuda cells, Jupyter-style math."
    d = tmp_path_factory.mktemp("docs_demo")
    nbs = d / "nbs"
    nbs.mkdir()
    nbformat.write(_nb(["md:# Demo home\n> The home page.", "md:Read [the first notebook](00_first.ipynb) first.\n\n"
                        "![a picture kept next to the notebooks](images/dot.png)"]), nbs / "index.ipynb")
    (nbs / "images").mkdir()
    (nbs / "images/dot.png").write_bytes(base64.b64decode(  # a 1x1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))
    nbformat.write(_nb([
        "md:# First notebook\n> A summary with math $x^2$.",
        "#| hide\nimport matplotlib.pyplot as plt\nfrom nbdev.showdoc import show_doc\n"
        "HIDDEN_MARKER = 'hidden-cell-ran'",
        "md:Inline $c_t=\\log p(y_t)-\\log q(y_t)$ and display in a paragraph "
        "$$k_t=\\sum_v p_v\\log\\frac{p_v}{q_v}$$ then text.\n"
        "* a list right after text, with $a*b*c$\n  * nested by two spaces\n\n"
        "$$\n\\begin{aligned} L &= \\mathbb{E}\\Big[\\beta\\sum_t c_t\\Big] \\\\ G_t &= \\lambda R \\end{aligned}\n$$",
        "#| export\ndef double(x:int=1, # the number\n          )->int:\n    \"Return `x` doubled.\"\n    return 2 * x",
        "md:`double` is documented above; the second notebook links to it too.",
        "fig, ax = plt.subplots(figsize=(4, 3))\nax.plot([0, 1, 2], [0, 1, 4], marker='o')\n"
        "ax.set_title('a parabola');",
        "print('printed', double(21))",
        "import os\n# as under nbdev_test: in the notebook's folder, with IN_TEST set\n"
        "assert os.path.isfile('images/dot.png') and os.environ.get('IN_TEST') == '1'",
        "#| slow\nraise RuntimeError('slow cell ran in the docs build')",
        "#| cuda\nraise RuntimeError('cuda cell ran in the docs build')",
        "#| hide\nprint(HIDDEN_MARKER)",
        "#| hide\nimport nbdev; nbdev.nbdev_export()",
    ]), nbs / "00_first.ipynb")
    nbformat.write(_nb(["md:# Second notebook\n> Links back.",
                        "md:Uses `double` from [the first notebook](00_first.ipynb#double) and [home](index.ipynb)."]),
                   nbs / "01_second.ipynb")
    nbformat.write(_nb(["md:# Private"]), nbs / "_private.ipynb")
    r = _build("--nbs", str(nbs), "--out", str(d / "site"), "--strict")
    return d / "site", json.loads((d / "site" / bd.BUILD_INFO).read_text()), r.stdout


def test_demo_site_on_disk(demo_site):
    root, info, log = demo_site
    assert [p["page"] for p in info["pages"]] == ["index.html", "first.html", "second.html"]
    assert info["errors"] == []
    first = (root / "first.html").read_text()
    assert "slow cell ran" in first and "cuda cell ran" in first  # the source of flagged cells is shown...
    assert 'class="nb-error"' not in first  # ...but they did not run (info["errors"] is empty too)
    assert "Not run in the docs build (#| slow)" in first
    assert "hidden-cell-ran" not in first and "HIDDEN_MARKER" not in first and "nbdev_export" not in first
    assert "printed 42" in first
    assert 'id="double"' in first and "Return <code>x</code> doubled." in first
    assert 'href="#double"' in first and 'href="first.html#double"' in (root / "second.html").read_text()
    assert len(list(root.glob("first_files/*.png"))) == 1
    assert (root / "images/dot.png").is_file() and 'src="images/dot.png"' in (root / "index.html").read_text()
    broken, external, _ = crawl(root)
    assert not broken and not external, (broken, external)


def test_demo_site_in_chromium(demo_site, browser_ctx):
    root, info, _ = demo_site
    with serve(root) as base:
        pg = Page(browser_ctx, base, "first.html")
        try:
            m = check_page(pg, "first.html")
            assert m["typeset"] == m["source"] >= 5, m
            plots = [i for i in pg.images() if i["plot"]]
            assert len(plots) == 1 and plots[0]["w"] >= 300, plots
            pg.page.locator("img.nb-plot").first.scroll_into_view_if_needed()
            pg.page.screenshot(path=str(root / "_screenshot_demo.png"))
            if SITE.is_dir(): shutil.copy(root / "_screenshot_demo.png", SITE / "_screenshot_demo.png")
            # nested list survived as a nested list; display math in a paragraph is display math
            assert pg.page.locator("article li ul li").count() >= 1
            assert pg.page.locator("article p mjx-container[display='true']").count() >= 1
        finally: pg.close()
        pg = Page(browser_ctx, base, "index.html")  # a picture from nbs/images/, shown by a markdown cell
        try: assert [i["ok"] for i in pg.images()] == [True] and check_page(pg, "index.html")
        finally: pg.close()


def test_half_written_notebooks_still_build(tmp_path):
    "A cell that raises or a notebook that isn't valid JSON yet gets a page that says so; --strict fails on it."
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(_nb(["md:# Home"]), nbs / "index.ipynb")
    nbformat.write(_nb(["md:# Broken\n> Being written.", "undefined_name + 1", "print('after the error')"]),
                   nbs / "00_broken.ipynb")
    (nbs / "01_partial.ipynb").write_text('{"cells": [{"cell_type": "markdown", "source": ["# Partial')
    r = _build("--nbs", str(nbs), "--out", str(tmp_path / "site"), "--workers", "1")
    info = json.loads((tmp_path / "site" / bd.BUILD_INFO).read_text())
    assert [p["page"] for p in info["pages"]] == ["index.html", "broken.html", "partial.html"]
    assert any("NameError" in e for e in info["errors"]) and any("could not render" in e for e in info["errors"])
    broken = (tmp_path / "site/broken.html").read_text()
    assert 'class="nb-error"' in broken and "NameError" in broken and "after the error" in broken
    assert "could not be rendered" in (tmp_path / "site/partial.html").read_text()
    assert "NameError" in r.stderr
    strict = subprocess.run([sys.executable, str(ROOT / "tools/build_docs.py"), "--nbs", str(nbs),
                             "--out", str(tmp_path / "site2"), "--workers", "1", "--strict"],
                            cwd=ROOT, capture_output=True, text=True)
    assert strict.returncode != 0 and "--strict" in strict.stderr
    # as nbdev_test: the notebook, the cell, its source and the traceback are printed; the notebook stops there
    err = strict.stderr
    assert "FAILED 00_broken.ipynb" in err and "cell 1:\nundefined_name + 1" in err, err
    assert "NameError: name 'undefined_name' is not defined" in err, err
    assert "notebooks that failed" in err and "\t00_broken.ipynb" in err and "\t01_partial.ipynb" in err, err
    assert "Not run in the docs build (an earlier cell failed)" in (tmp_path / "site2/broken.html").read_text()


def test_npm_packages_are_fetched_by_name(tmp_path, monkeypatch):
    "No registry URL in the build: packages come through npm (its registry, mirror, proxy); no npm, a clear error."
    src = (ROOT / "tools/build_docs.py").read_text()
    assert not re.search(r"https?://[^\s\"']*(registry|npmjs|unpkg|jsdelivr)", src)
    monkeypatch.setattr(bd.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="npm is needed"): bd.npm_files("iframe-worker", tmp_path)
