"""The built wheel carries the C source of the CPU kernel (`hybrid_ilrl/ops/hybrid_cpu.c`, package data): build it,
install it with --no-deps into a fresh virtualenv outside the repository, and run the CPU kernel from there against the
PyTorch backend. Skipped only when pip cannot build a wheel here (offline, without setuptools); every later failure is a
failure."""
import json, os, shutil, subprocess, sys, sysconfig, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = r'''
import json, sys, torch
import hybrid_ilrl
from hybrid_ilrl.ops.cpu import load_cpu_kernel, cpu_source
from hybrid_ilrl.ops.loss import fused_logit_grad
assert load_cpu_kernel() is not None, "the C kernel did not build from the installed source"
g = torch.Generator().manual_seed(0)
z, z_E = torch.randn(6, 500, generator=g), torch.randn(6, 500, generator=g)
y, A = torch.randint(0, 500, (6,), generator=g), torch.randn(6, generator=g)
c, t = fused_logit_grad(z, z_E, y, A, tau=0.7, backend='cpu'), fused_logit_grad(z, z_E, y, A, tau=0.7, backend='torch')
torch.testing.assert_close(c.g, t.g, rtol=1e-4, atol=1e-6)
torch.testing.assert_close(c.k, t.k, rtol=1e-5, atol=1e-5)
print(json.dumps(dict(package=hybrid_ilrl.__file__, source=str(cpu_source()))))
'''

def _copy_tree(dst:Path):
    "The files a wheel is built from, copied, so the build writes nothing into the checkout."
    for f in ('setup.py', 'settings.ini', 'MANIFEST.in', 'README.md', 'LICENSE', 'pyproject.toml'):
        if (ROOT / f).exists(): shutil.copy(ROOT / f, dst / f)
    shutil.copytree(ROOT / 'hybrid_ilrl', dst / 'hybrid_ilrl', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))

def test_wheel_carries_and_builds_the_c_kernel(tmp_path):
    src, dist = tmp_path / 'src', tmp_path / 'dist'
    src.mkdir()
    _copy_tree(src)
    build = [sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps', '--no-build-isolation', '-w', str(dist)]
    res = subprocess.run(build, capture_output=True, text=True, cwd=tmp_path)
    if res.returncode: pytest.skip(f"pip cannot build a wheel here: {res.stderr.strip()[-300:]}")
    wheel, = dist.glob('hybrid_ilrl-*.whl')
    assert 'hybrid_ilrl/ops/hybrid_cpu.c' in zipfile.ZipFile(wheel).namelist()
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], check=True, capture_output=True)
    py = venv / 'bin' / 'python'
    # torch and the other dependencies come from this interpreter's site-packages (a .pth line, so its editable
    # install of the checkout is not activated); hybrid_ilrl itself only from the wheel
    site = subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, '_outer_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    install = [str(py), '-m', 'pip', 'install', '--no-deps', '--no-index', str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'HYBRID_ILRL_BACKEND')}
    env['HYBRID_ILRL_CACHE'] = str(tmp_path / 'cache')     # compile from the installed .c, not a cached build
    run = subprocess.run([str(py), '-c', CHECK], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out['package'].startswith(str(venv)) and out['source'].startswith(str(venv)), out   # not the checkout
    assert list((tmp_path / 'cache').glob('hybrid_cpu_*.so'))
