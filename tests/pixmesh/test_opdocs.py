"""README's Operations table and docs/operations.md are what operations.proto generates."""

from __future__ import annotations

import json

from pixmesh import _opdocs, rules


def test_generated_docs_are_current() -> None:
    # Stale after a proto change until `make docs` is run and committed.
    assert _opdocs.main(["--check"]) == 0


def test_table_has_a_row_per_operation_with_its_examples() -> None:
    table = _opdocs.table()
    for name, op in rules.OPERATIONS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| [{name}]"))
        for example in op.examples:
            assert f"`{example}`" in row
            assert next(iter(json.loads(example))) == name
