"""engine.project: ignore rules (built-in names, .gitignore/.flashignore semantics) and the walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from projectfiles import write_files

from engine.project import ALWAYS_SKIP, Project, ignore_predicate, load_ignore


def _py(root: Path) -> set[str]:
    return {f.rel for f in Project.open(root).python_files()}


def test_builtin_skips_apply_at_any_depth(tmp_path: Path) -> None:
    files = {"main.py": "", "pkg/mod.py": ""}
    for name in ALWAYS_SKIP:
        files[f"{name}/top.py"] = ""
        files[f"pkg/deep/{name}/nested.py"] = ""
    files["anyname/pyvenv.cfg"] = "home = /usr\n"  # a venv with an unusual name
    files["anyname/lib/x.py"] = ""
    write_files(tmp_path, files)
    assert _py(tmp_path) == {"main.py", "pkg/mod.py"}
    rules = load_ignore(tmp_path)
    assert rules.is_ignored("pkg/deep/node_modules", True)
    assert rules.is_ignored("pkg/deep/.venv/nested.py")
    assert rules.is_ignored("anyname", True)
    assert not rules.is_ignored("pkg/mod.py") and not rules.is_ignored("pkg", True)


def test_gitignore_patterns_negation_and_flashignore(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            ".gitignore": "build/\n*.gen.py\n!keep.gen.py\n/rootonly.py\n# comment\n",
            ".flashignore": "scratch/\n",
            "main.py": "",
            "build/out.py": "",
            "src/build/also.py": "",
            "a.gen.py": "",
            "src/keep.gen.py": "",
            "src/b.gen.py": "",
            "rootonly.py": "",
            "src/rootonly.py": "",
            "scratch/tmp.py": "",
        },
    )
    assert _py(tmp_path) == {"main.py", "src/keep.gen.py", "src/rootonly.py"}
    rules = load_ignore(tmp_path)
    assert rules.is_ignored("build", True)
    assert rules.is_ignored("build/out.py")  # a parent directory is ignored
    assert not rules.is_ignored("build")  # the file named "build" is not (pattern is dir-only)
    assert rules.is_ignored("scratch/tmp.py")
    assert not rules.is_ignored("keep.gen.py")


def test_nested_gitignore_and_no_reinclusion_under_an_ignored_dir(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            ".gitignore": "*.tmp.py\nlogs/\n!logs/important.py\n",
            "pkg/.gitignore": "private.py\n!special.tmp.py\n",
            "pkg/private.py": "",
            "pkg/public.py": "",
            "pkg/special.tmp.py": "",
            "pkg/other.tmp.py": "",
            "private.py": "",
            "logs/important.py": "",
        },
    )
    # pkg/.gitignore re-includes special.tmp.py below it; logs/ stays out entirely (git semantics)
    assert _py(tmp_path) == {"pkg/public.py", "pkg/special.tmp.py", "private.py"}
    assert load_ignore(tmp_path).is_ignored("logs/important.py")


def test_rules_reload_after_edit(tmp_path: Path) -> None:
    write_files(tmp_path, {".gitignore": "a.py\n", "a.py": "", "b.py": ""})
    project = Project.open(tmp_path)
    assert {f.rel for f in project.python_files()} == {"b.py"}
    first = project.last_rule_files
    (tmp_path / ".gitignore").write_text("b.py\n")
    os.utime(tmp_path / ".gitignore", ns=(1, 1))
    assert {f.rel for f in project.python_files()} == {"b.py"}  # cached decisions...
    assert project.last_rule_files != first  # ...but the walk saw the rule file change
    project.ignore.reload()
    assert {f.rel for f in project.python_files()} == {"a.py"}


def test_ignore_predicate_takes_absolute_paths(tmp_path: Path) -> None:
    write_files(tmp_path, {".gitignore": "gen/\n", "gen/x.py": "", "ok.py": ""})
    ignored = ignore_predicate(tmp_path)
    assert ignored(tmp_path / "gen" / "x.py")
    assert ignored(tmp_path / ".git" / "HEAD")
    assert not ignored(tmp_path / "ok.py")
    assert ignored(tmp_path.parent / "elsewhere.py")  # outside the project


def test_symlinks_loops_and_escapes(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    outside = tmp_path / "outside"
    write_files(root, {"main.py": "", "real/mod.py": ""})
    write_files(outside, {"secret.py": "", "pkg/x.py": ""})
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "real" / "again").symlink_to(root / "real", target_is_directory=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)  # already walked
    (root / "out_dir").symlink_to(outside / "pkg", target_is_directory=True)
    (root / "out_file.py").symlink_to(outside / "secret.py")
    (root / "in_file.py").symlink_to(root / "main.py")
    (root / "dangling.py").symlink_to(root / "missing.py")
    (root / "self.py").symlink_to(root / "self.py")
    assert _py(root) == {"main.py", "real/mod.py", "in_file.py"}


def test_symlinked_dir_inside_the_project_is_walked_once(tmp_path: Path) -> None:
    write_files(tmp_path, {".gitignore": "hidden/\n", "hidden/mod.py": ""})
    (tmp_path / "shown").symlink_to(tmp_path / "hidden", target_is_directory=True)
    assert _py(tmp_path) == {"shown/mod.py"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_unreadable_directory_is_skipped(tmp_path: Path) -> None:
    write_files(tmp_path, {"ok.py": "", "closed/x.py": ""})
    (tmp_path / "closed").chmod(0)
    try:
        assert _py(tmp_path) == {"ok.py"}
    finally:
        (tmp_path / "closed").chmod(0o755)


def test_open_and_name(tmp_path: Path) -> None:
    project = Project.open(tmp_path)
    assert project.name == tmp_path.name and project.root == tmp_path.resolve()
    with pytest.raises(NotADirectoryError):
        Project.open(tmp_path / "missing")
    assert project.relpath(tmp_path / "a" / "b.py") == "a/b.py"
