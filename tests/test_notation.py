"""One symbol per meaning in the derivation notebooks: the retired, overloaded uses must not come back.

G is the return G_t only (the group size is n, `group_size`); s is the prefix s_t only (the surrogate is L̃); at a
prefix the policies are p and q (not π_v, π_{E,v}); c_t(v) is defined in the notation table of notebook 00.
"""
import json, re
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = ["00_objective.ipynb", "01_decomposition.ipynb", "02_logit_grad.ipynb", "08_variance.ipynb",
             "09_exact_study.ipynb", "12_explorer.ipynb"]

# pattern -> what it meant, and what to write instead
RETIRED = {
    r"\\pi_v\b|\\pi_\{E,\s*v\}": "π_v / π_{E,v} for the policies at a prefix: write p_v / q_v",
    r"\$G\$ responses|\$G=\d|\\frac\{G-1\}\{G\}|\(G-1\)/G|\bG\$-tuple|G\\le": "G as the group size: write n",
    r"\bs\(x,\s*y;": "s(x, y; θ) for the surrogate: write \\tilde L(x, y; θ)",
    r"sharpness \$s\$|sharpness s\b|\\mathrm\{softmax\}\(s\\,z_E|\bs·z_E":
        "s as the teacher's sharpness (κ now): s is the prefix only",
}
# code: the old group-size variable, and labels that print G for the group size
RETIRED_CODE = {r"\bG_\b": "G_ as the group size: write n_", r"f\"G=\{": "G= printed for the group size"}


def cells(name):
    return json.loads((NBS / name).read_text())["cells"]


def text(cell):
    return "".join(cell["source"])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_retired_symbols(name):
    bad = []
    for i, cell in enumerate(cells(name)):
        pats = RETIRED if cell["cell_type"] == "markdown" else {**RETIRED, **RETIRED_CODE}
        for pat, why in pats.items():
            for m in re.finditer(pat, text(cell)):
                bad.append(f"{name} cell {i}: {m.group(0)!r} ({why})")
    assert not bad, "retired notation:\n" + "\n".join(bad)


def test_patterns_catch_the_old_uses():
    "Each pattern fires on the text it retired (so the test above can fail)."
    old = ["$k_t=\\sum_v\\pi_v(\\log\\pi_v-\\log\\pi_{E,v})$", "With $G$ responses sampled", "($G=2$, $27^2$ pairs",
           "a **surrogate** $s(x,y;\\theta)$", "**$q=\\mathrm{softmax}(s\\,z_E/\\tau)$**", "the $G$-tuple"]
    for s in old:
        assert any(re.search(p, s) for p in RETIRED), s
    assert re.search(r"\bG_\b", "for G_ in (1, 2):") and re.search(r"f\"G=\{", 'print(f"G={G_}: ...")')


def test_notation_table_defines_each_symbol_once():
    md = "\n".join(text(c) for c in cells("00_objective.ipynb") if c["cell_type"] == "markdown")
    table = md[md.index("## Notation"):]
    table = table[:table.index("\n## ", 1)]
    rows = [r for r in table.splitlines() if r.startswith("| $")]
    for sym in ["$s_t=(x,y_{<t})$", "$c_t(v)$", "$k_t$", "$G_t$", "$n$", "$\\tilde L(x,y;\\theta)$", "$p$, $q$"]:
        assert sum(r.startswith(f"| {sym}") for r in rows) == 1, f"{sym} should have one row in the notation table"
    assert "`group_size`" in table and "`returns`" in table  # the code's names beside the symbols


@pytest.mark.parametrize("name", NOTEBOOKS[:3])
def test_exercises_have_hidden_checked_solutions(name):
    cs = cells(name)
    start = next(i for i, c in enumerate(cs) if c["cell_type"] == "markdown" and text(c).startswith("## Exercises"))
    sols = [text(c) for c in cs[start:] if c["cell_type"] == "code" and text(c).startswith("#| hide\n")
            and "nbdev_export" not in text(c)]
    assert 2 <= len(sols) <= 3, f"{name}: {len(sols)} exercise solutions"
    for s in sols:  # a check that can fail
        assert re.search(r"test_close|test_eq|assert ", s), s
