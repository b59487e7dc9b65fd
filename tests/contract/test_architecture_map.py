"""docs/architecture.md stays true: every module and symbol its where-tables name exists."""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
# Paths the page writes from the repository's root; any other is inside a package or a tree.
TOP_LEVEL = frozenset(
    {"services", "shared", "sandboxes", "tools", "frontends", "tests", "deploy", "scripts"}
)
PACKAGE_ROOTS = (
    "services/*/src",
    "shared/*/src",
    "sandboxes/src",
    "tools/*/src",
    "frontends/*/src",
)
SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
# Objects the page names by their usual variable, e.g. `runtime.due_work`.
OBJECTS = {"runtime": ("shared/core/src/esim_core/service.py", "ServiceRuntime")}
TICKED = re.compile(r"`([^`]+)`")
HEADING_TREE = re.compile(r"`((?:services|shared|sandboxes|frontends)/[^`]*)`")


@dataclass(frozen=True)
class Where:
    """One where-cell of the page, with the tree its section reads paths from."""

    heading: str
    tree: Path | None
    cell: str


def where_cells(text: str) -> Iterator[Where]:
    """Every cell of a `where` column, in page order."""
    heading, tree, column = "", None, None
    for line in text.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            heading, column = line, None
            if line.startswith("## "):
                found = HEADING_TREE.search(line)
                path = ROOT / found.group(1) if found else None
                tree = path.parent if path is not None and path.suffix else path
            continue
        if not line.startswith("|"):
            column = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if column is None:
            column = cells.index("where") if "where" in cells else -1
        elif column >= 0 and not set(line) <= set("|- "):
            yield Where(heading, tree, cells[column])


def _pattern(token: str) -> str:
    return re.sub(r"<[^>]+>", "*", token).rstrip("/")


def resolve(token: str, tree: Path | None, near: Path | None) -> list[Path]:
    """The files or folders a path of the page means (a glob where it has `<...>` or `*`)."""
    pattern = _pattern(token)
    first = pattern.split("/")[0]
    if first in TOP_LEVEL:
        bases = [ROOT]
    elif "/" not in pattern and near is not None:
        bases = [near]
    else:
        bases = [base for base in (tree, near) if base is not None]
        bases += [found.parent for root in PACKAGE_ROOTS for found in ROOT.glob(f"{root}/{first}")]
    return [found for base in bases for found in base.glob(pattern)]


@cache
def names_in(module: Path) -> dict[str, set[str]]:
    """The names a module defines: `""` maps to all of them, each class to its own."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names: dict[str, set[str]] = {"": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names[""].add(node.name)
        if isinstance(node, ast.ClassDef):
            names[node.name] = {
                child.name
                for child in node.body
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            } | {
                target.id
                for child in node.body
                if isinstance(child, ast.AnnAssign | ast.Assign)
                for target in (child.targets if isinstance(child, ast.Assign) else [child.target])
                if isinstance(target, ast.Name)
            }
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names[""] |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


@cache
def table_names() -> frozenset[str]:
    """Every `__tablename__` the services and the core declare: the page names rows by it."""
    declared = re.compile(r"__tablename__\s*=\s*\"([a-z_]+)\"")
    return frozenset(
        name
        for root in ("services", "shared")
        for module in (ROOT / root).rglob("*/src/**/*.py")
        for name in declared.findall(module.read_text(encoding="utf-8"))
    )


def has_symbol(symbol: str, module: Path) -> bool:
    """Whether `symbol` (`name`, `Class.name` or `module.name`) is defined where the page says."""
    head, _, tail = symbol.partition(".")
    if head in OBJECTS:
        path, head = OBJECTS[head]
        module = ROOT / path
    if not tail:
        return head in names_in(module)[""]
    if head in names_in(module):
        return tail in names_in(module)[head]
    sibling = module.parent / f"{head}.py"
    if sibling.exists():
        return tail in names_in(sibling)[""]
    # A class the page names by itself, e.g. `RenewalSaga.request_cancel`, somewhere in the package.
    return any(tail in names_in(other).get(head, ()) for other in module.parent.rglob("*.py"))


def problems(where: Where) -> list[str]:
    """What a where-cell names that the tree does not have."""
    found: list[str] = []
    module: Path | None = None
    near: Path | None = None
    lost = False  # the path before was wrong: its symbols are not reported again
    for token in TICKED.findall(where.cell):
        if " " in token or token.startswith("."):
            continue  # an HTTP operation or a file suffix, not a place in the tree
        is_path = "/" in token or "*" in token or re.search(r"\.(py|j2|html|txt|sms)$", token)
        if is_path:
            paths = resolve(token, where.tree, near)
            lost = not paths
            if lost:
                found.append(f"{where.heading}: no path `{token}`")
                continue
            near = paths[0] if paths[0].is_dir() else paths[0].parent
            module = paths[0] if paths[0].suffix == ".py" else None
        elif SYMBOL.match(token):
            if lost or token in table_names():
                continue
            if module is None:
                found.append(f"{where.heading}: `{token}` follows no module")
            elif not has_symbol(token, module):
                found.append(f"{where.heading}: no `{token}` in {module.relative_to(ROOT)}")
    return found


def test_every_module_and_symbol_the_where_tables_name_exists() -> None:
    cells = list(where_cells(PAGE.read_text(encoding="utf-8")))
    assert len(cells) > 30, "the where-tables were not found; has the page's table form changed?"
    assert [problem for where in cells for problem in problems(where)] == []


def test_a_renewal_charged_and_an_activation_are_found_in_one_guess() -> None:
    cells = list(where_cells(PAGE.read_text(encoding="utf-8")))
    first = {(where.heading.split(" (")[0], where.cell.split(" (")[0]) for where in cells}
    assert ("## Payments", "`charging.py` `ChargeWorker`") in first
    assert ("## Payments", "`refunding.py` `RefundWorker`") in first
    assert ("## Activation", "`activating.py` `ActivationWorker`") in first


def test_a_name_that_the_tree_lacks_is_reported() -> None:
    tree = ROOT / "services/billing/src/billing"
    cells = [
        Where("## Payments", tree, "`charging.py` `ChargeWorker` (`charge`, `_charge_twice`)"),
        Where("## Payments", tree, "`workers.py` `ChargeWorker`"),
        Where("## Payments", tree, "`charging.py` `RefundWorker.charge`"),
        Where("## Payments", tree, "`ChargeWorker`"),
    ]
    assert [problem for where in cells for problem in problems(where)] == [
        "## Payments: no `_charge_twice` in services/billing/src/billing/charging.py",
        "## Payments: no path `workers.py`",
        "## Payments: no `RefundWorker.charge` in services/billing/src/billing/charging.py",
        "## Payments: `ChargeWorker` follows no module",
    ]
