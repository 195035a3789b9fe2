"""Every module in a role's library/ documents itself as Ansible modules do, and its documentation says what its
argument_spec enforces.

DOCUMENTATION, EXAMPLES and RETURN are YAML strings (https://docs.ansible.com/ansible/latest/dev_guide/
developing_modules_documenting.html); `ansible-doc` renders them. The argument_spec is what Ansible checks a task's
arguments against, so a documented option that differs from it in name, type, required, default, choices or elements
misleads whoever writes the task. The spec is read from the source with `ast`, without running the module: either
the dict literal passed as `argument_spec=`, or the module-level name it is given.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"
MODULES = sorted(ROLES.glob("*/library/*.py"))
DOC_BLOCKS = ("DOCUMENTATION", "EXAMPLES", "RETURN")
# What Ansible assumes when an option leaves a key out, in the spec and in the documentation alike.
OPTION_DEFAULTS = {"type": "str", "required": False, "default": None, "choices": None, "elements": None}


def module_id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.stem}"


def literal(node: ast.AST, names: dict[str, ast.AST]) -> Any:
    """The value of a literal spec: dict/list/str/number literals, `dict(key=...)` calls, and module-level names."""
    if isinstance(node, ast.Name) and node.id in names:
        return literal(names[node.id], names)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {keyword.arg: literal(keyword.value, names) for keyword in node.keywords}
    if isinstance(node, ast.Dict):
        return {literal(k, names): literal(v, names) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal(element, names) for element in node.elts]
    return ast.literal_eval(node)


def module_source(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(the doc blocks, the argument_spec) of the module at path, from its syntax tree."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: dict[str, ast.AST] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target = statement.target
        else:
            continue
        if isinstance(target, ast.Name):
            names[target.id] = statement.value
    blocks = {name: ast.literal_eval(names[name]) for name in DOC_BLOCKS if name in names}
    specs = [
        keyword.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "argument_spec"
    ]
    assert len(specs) == 1, f"{path}: expected one argument_spec=..., found {len(specs)}"
    return blocks, literal(specs[0], names)


def normalised(option: dict[str, Any]) -> dict[str, Any]:
    return {key: option.get(key, absent) for key, absent in OPTION_DEFAULTS.items()}


def disagreements(spec: dict[str, Any], documented: dict[str, Any], where: str = "") -> list[str]:
    """Each way the documented options differ from the spec, suboptions included; [] when they agree."""
    found = []
    for name in sorted(set(spec) - set(documented)):
        found.append(f"option {where}{name} is in argument_spec but not documented")
    for name in sorted(set(documented) - set(spec)):
        found.append(f"option {where}{name} is documented but not in argument_spec")
    for name in sorted(set(spec) & set(documented)):
        code, doc = normalised(spec[name]), normalised(documented[name] or {})
        for key in OPTION_DEFAULTS:
            if code[key] != doc[key]:
                found.append(f"option {where}{name}: {key} is {code[key]!r} in argument_spec, {doc[key]!r} documented")
        if spec[name].get("no_log") and "default" in spec[name]:
            found.append(f"option {where}{name} is no_log but has a default")
        found += disagreements(
            spec[name].get("options") or {}, (documented[name] or {}).get("suboptions") or {}, f"{name}."
        )
    return found


def test_there_are_modules_to_check():
    assert MODULES, f"no module under {ROLES}/*/library"


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_the_module_documents_itself_in_yaml(path):
    blocks, _ = module_source(path)
    missing = [name for name in DOC_BLOCKS if name not in blocks]
    assert not missing, f"{module_id(path)} has no {', '.join(missing)}"
    documentation = yaml.safe_load(blocks["DOCUMENTATION"])
    assert documentation["module"] == path.stem
    assert documentation.get("short_description") and documentation.get("description")
    examples = yaml.safe_load(blocks["EXAMPLES"])
    assert isinstance(examples, list) and all(path.stem in task for task in examples), "every example calls it"
    returned = yaml.safe_load(blocks["RETURN"])
    assert isinstance(returned, dict) and returned, "RETURN names what the module returns"
    for name, value in returned.items():
        assert {"description", "returned", "type"} <= set(value), f"RETURN {name} lacks description/returned/type"


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_the_documented_options_are_the_argument_spec(path):
    blocks, spec = module_source(path)
    documented = yaml.safe_load(blocks.get("DOCUMENTATION") or "{}").get("options") or {}
    found = disagreements(spec, documented)
    assert not found, f"{module_id(path)}:\n" + "\n".join(found)


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_ansible_doc_renders_it(path):
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    result = subprocess.run(
        [str(ansible_doc), "--json", "-M", str(path.parent), path.stem], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)[path.stem]
    assert rendered["doc"]["module"] == path.stem and rendered["examples"] and rendered["return"]


def test_a_disagreement_is_named():
    spec = {"path": {"type": "path", "required": True}, "token": {"type": "str", "no_log": True, "default": "x"}}
    documented = {"path": {"type": "str", "required": True}, "wait": {"type": "int"}, "token": {"default": "x"}}
    assert disagreements(spec, documented) == [
        "option wait is documented but not in argument_spec",
        "option path: type is 'path' in argument_spec, 'str' documented",
        "option token is no_log but has a default",
    ]
