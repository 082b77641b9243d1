"""Definition sites: the fast line lookup agrees with the interpreter's f_lineno."""

import sys

from legacy_parser.compat import _LINE_TABLES, _line_of, definition_site


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


def test_a_modules_line_table_goes_when_its_code_does():
    # A team module's table holds an offset per instruction range; kept for the rest of
    # the parse, the tables of a 10,000-workflow repo came to more than its definitions.
    source = "".join(f"value_{i} = line_of(frame())\n" for i in range(500))
    code = compile(source, "team_module.py", "exec")
    namespace = {"line_of": _line_of, "frame": sys._getframe}
    exec(code, namespace)  # noqa: S102 - test-made code
    assert namespace["value_499"] == 500
    assert id(code) in _LINE_TABLES
    code_id = id(code)
    del code
    assert code_id not in _LINE_TABLES


def test_a_config_and_the_template_built_on_its_line_share_one_site():
    # JobConfig(JobTemplate(...)): two definition sites, the same file and line.
    source = "same_line = (site(), site())\nnext_line = site()\n"
    namespace = {"site": definition_site}
    exec(compile(source, "team_module.py", "exec"), namespace)  # noqa: S102 - test-made code
    first, second = namespace["same_line"]
    assert first == ("team_module.py", 1)
    assert second is first
    assert namespace["next_line"] == ("team_module.py", 2)
