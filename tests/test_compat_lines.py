"""Definition sites: the fast line lookup agrees with the interpreter's f_lineno."""

import sys

from legacy_parser.compat import _line_of


def test_line_table_lookup_matches_f_lineno_inside_a_huge_literal():
    # A team module is often one dict literal building thousands of configs.
    source = "seen = []\nWORKFLOWS = {\n" + "".join(
        f"    'w{i}': seen.append((line_of(frame()), frame().f_lineno)),\n" for i in range(2000)
    ) + "}\n"
    namespace = {"line_of": _line_of, "frame": sys._getframe}
    exec(compile(source, "team_module.py", "exec"), namespace)  # noqa: S102 - test-made code
    seen = namespace["seen"]
    assert len(seen) == 2000
    assert [fast for fast, _ in seen] == [slow for _, slow in seen]
    assert seen[0][0] == 3 and seen[-1][0] == 2002
