"""The explorer notebook in JupyterLab, in a real browser: the first use the package promises is reading the notebooks.

A JupyterLab server starts headless on a free local port (a token, a temporary root holding a copy of
`nbs/12_explorer.ipynb`, no network, nothing read from the user's Jupyter config); Debian's `chromium`, driven by
Playwright as in test_docs.py, opens the notebook, runs every cell, waits for the ipywidgets sliders, moves one and
checks the figure is redrawn. The server is always shut down. Skipped under HYBRID_ILRL_SKIP_BROWSER=1 (as in
test_docs.py); without chromium, JupyterLab, its widgets extension or Playwright it fails, naming what is missing.
The screenshot goes to pytest's temporary folder and, when the docs site is built, to
docs/site/_screenshot_jupyterlab.png (git-ignored): look at it.
"""
import io, json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if Path(p).exists()), None)
SKIP_BROWSER = os.environ.get("HYBRID_ILRL_SKIP_BROWSER") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOT = ROOT / "docs/site/_screenshot_jupyterlab.png"
TOKEN = "hybrid-ilrl-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _explorer_copy(root: Path) -> Path:
    "The explorer notebook without its `nbdev_export()` cell (it needs the repo's settings.ini, not a temp folder)."
    nb = nbformat.read(ROOT / "nbs/12_explorer.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "nbdev_export" not in c.source]
    for c in nb.cells:
        if c.cell_type == "code": c.outputs, c.execution_count = [], None
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, root / "explorer.ipynb")
    return root / "explorer.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 serving a temp root with the explorer; yields its base URL; always shut down."
    if SKIP_BROWSER: pytest.skip("HYBRID_ILRL_SKIP_BROWSER=1: the in-browser JupyterLab check is skipped")
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: `apt-get install chromium` (scripts/test.sh does it), "
                    "or set HYBRID_ILRL_SKIP_BROWSER=1 to skip the in-browser checks", pytrace=False)
    try: import jupyterlab, ipykernel, ipywidgets, jupyterlab_widgets, playwright  # noqa: F401
    except ImportError as e:
        pytest.fail(f"{e.name} is not installed: pip install -e '.[dev]' (it includes the jupyter extra)",
                    pytrace=False)
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root, home = tmp / "root", tmp / "home"
    root.mkdir()
    home.mkdir()
    _explorer_copy(root)
    news = home / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "get notified about Jupyter news?" toast
    port = _free_port()
    env = dict(os.environ, HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_DATA_DIR=str(home / "data"),
               IPYTHONDIR=str(home / "ipython"), MPLBACKEND="module://matplotlib_inline.backend_inline",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
           f"--LabApp.workspaces_dir={home / 'workspaces'}",
           f"--LabApp.user_settings_dir={home / 'settings'}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
    if os.geteuid() == 0: cmd.append("--allow-root")  # containers and CI often run as root
    log = open(tmp / "server.log", "w+")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n{log.read()[-3000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{base}api/status?token={TOKEN}", timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.monotonic() > deadline: pytest.fail("JupyterLab did not answer within 60 s", pytrace=False)
            time.sleep(0.3)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # jupyter_server shuts its kernels down on SIGTERM
            try: proc.wait(15)
            except subprocess.TimeoutExpired: pass
        try: os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group this test started (a kernel?)
        except ProcessLookupError: pass
        proc.wait(5)
        log.close()


def _nonblank(png: bytes) -> float:
    "Standard deviation of the grey levels of a PNG: about 0 for a blank (one-colour) image."
    import matplotlib.image as mpimg
    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    return float(img.mean(-1).std())


def test_explorer_sliders_in_jupyterlab(lab, tmp_path):
    # Playwright's sync API refuses a thread in which an asyncio loop runs (an earlier test in this process may have
    # left one running), so the browser is driven from a thread of its own
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool: pool.submit(_explorer_in_lab, lab, tmp_path).result()


def _explorer_in_lab(lab, tmp_path):
    "Open the explorer in JupyterLab, run it, move a slider, check the redraw (see the module's docstring)."
    from playwright.sync_api import sync_playwright
    start = time.monotonic()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as user_data:
        ctx = p.chromium.launch_persistent_context(user_data, executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1400})
        try:
            external, errors = [], []
            # nothing leaves the machine: requests to anything but the server are refused and recorded
            ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith((lab, "data:", "blob:"))
                      else (external.append(route.request.url), route.abort()))
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab}lab/tree/explorer.ipynb?token={TOKEN}&reset", wait_until="load")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)
            page.evaluate("""async () => {
                const nb = window.jupyterapp.shell.currentWidget;
                await nb.context.ready;
                await nb.sessionContext.ready;
                await window.jupyterapp.commands.execute('notebook:run-all-cells');
            }""")
            # every cell ran (an execution count on each code cell) and none raised
            page.wait_for_function("""() => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                const code = nb.widgets.filter(c => c.model.type === 'code');
                return code.every(c => c.model.executionCount !== null) &&
                       nb.widgets.length && window.jupyterapp.shell.currentWidget.sessionContext.session
                       .kernel.status === 'idle';
            }""", timeout=90_000)
            failed = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
                .filter(c => c.model.type === 'code')
                .flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                    .map(o => `${o.ename}: ${o.evalue}`))""")
            assert not failed, f"cells raised in JupyterLab: {failed}"
            # the sliders render (ipywidgets' front end is installed and talks to the kernel) ...
            widget = page.locator(".widget-interact").last
            widget.wait_for(state="visible", timeout=30_000)
            sliders = widget.locator(".widget-slider")
            sliders.first.wait_for(state="visible", timeout=30_000)
            labels = [t.strip() for t in widget.locator(".widget-slider .widget-label").all_inner_texts()]
            assert labels[:2] == ["β (KL weight)", "λ (reward weight)"] and len(labels) == 6, labels
            fig = widget.locator(".widget-output img").first
            fig.wait_for(state="visible", timeout=30_000)
            widget.scroll_into_view_if_needed()
            before_src, before_png = fig.get_attribute("src"), widget.screenshot()
            assert _nonblank(before_png) > 0.05, "the explorer screenshot is blank"
            # ... and respond: β to 0 empties the dense panel and the figure is redrawn
            readout = sliders.first.locator(".widget-readout")
            assert readout.inner_text().strip() in ("1.00", "1.0", "1"), readout.inner_text()
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("0")
            page.keyboard.press("Enter")
            page.wait_for_function("src => { const i = document.querySelectorAll("
                                   "'.widget-interact .widget-output img');"
                                   " return i.length && i[i.length - 1].getAttribute('src') !== src; }",
                                   arg=before_src, timeout=30_000)
            assert readout.inner_text().strip() in ("0.00", "0.0", "0"), readout.inner_text()
            after_png = widget.screenshot()
            assert after_png != before_png and _nonblank(after_png) > 0.05
            (tmp_path / SHOT.name).write_bytes(after_png)
            if SHOT.parent.is_dir(): SHOT.write_bytes(after_png)  # next to test_docs.py's screenshots
            assert not external, f"JupyterLab tried to load from the network: {external[:5]}"
            assert not errors, f"script errors in JupyterLab: {errors[:5]}"
        finally: ctx.close()
    assert time.monotonic() - start < 120  # a regression that makes it crawl should be seen
