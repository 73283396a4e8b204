"""code_version() names the commit, and says ``+dirty`` when tracked files differ from it."""
import subprocess

from geoseg.card import code_version


def git(repo, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_code_version_marks_a_modified_tree_dirty(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-qm", "a")
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=tmp_path, capture_output=True,
                         text=True).stdout.strip()
    assert code_version(tmp_path) == sha
    (tmp_path / "new.py").write_text("untracked files do not count\n")
    assert code_version(tmp_path) == sha
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == f"{sha}+dirty"


def test_code_version_ignores_a_git_project_the_package_is_installed_in(tmp_path, monkeypatch):
    """A venv inside the user's own repo: site-packages is in that work tree, but it is not geoseg's."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "the user's project")
    site_packages = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    site_packages.mkdir(parents=True)
    monkeypatch.delenv("GEOSEG_CODE_VERSION", raising=False)
    assert code_version(site_packages) == "unknown"
    monkeypatch.setenv("GEOSEG_CODE_VERSION", "v0.1.0-wheel")
    assert code_version(site_packages) == "v0.1.0-wheel"
