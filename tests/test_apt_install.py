"""infra/apt-install.sh, behind `make test` (--if-possible), `make test-servers` and
`make image-tools`: installs only what is missing, as root or with sudo; `make test` falls back to
skipping where it cannot install. The machine is faked with stand-ins on PATH (id, sudo,
dpkg-query, apt-get) that log what they are asked; nothing is installed or removed."""
from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from pipelines.matrix import REPO_ROOT

SCRIPT = REPO_ROOT / "infra" / "apt-install.sh"
STAND_INS = {
    "id": 'echo "${FAKE_UID:-1000}"\n',
    # only `sudo -n` is refused without a password; plain sudo would ask for it
    "sudo": 'if [ "$1" = -n ]; then\n'
            '  [ "${FAKE_SUDO:-}" = nopass ] || { echo "sudo: a password is required" >&2\n'
            '    exit 1; }\n'
            '  shift; echo "sudo -n $*" >> "$LOG"\nelse echo "sudo $*" >> "$LOG"; fi\n'
            'exec "$@"\n',
    "dpkg-query": 'for p in $FAKE_INSTALLED; do\n'
                  '  [ "$p" = "${!#}" ] && { echo "install ok installed"; exit 0; }\ndone\n'
                  'echo "dpkg-query: no packages found matching ${!#}" >&2; exit 1\n',
    "apt-get": 'echo "apt-get $* (DEBIAN_FRONTEND=$DEBIAN_FRONTEND)" >> "$LOG"\n'
               'exit "${FAKE_APT_RC:-0}"\n',
}


@pytest.fixture
def machine(tmp_path):
  folder = tmp_path / "bin"
  folder.mkdir()
  for name, body in STAND_INS.items():
    (folder / name).write_text("#!/usr/bin/env bash\n" + body)
    (folder / name).chmod(0o755)
  log = tmp_path / "log"

  def run(*args: str, **fake: str):
    env = {"PATH": f"{folder}:/usr/bin:/bin", "LOG": str(log),
           **{f"FAKE_{k.upper()}": v for k, v in fake.items()}}
    done = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return done, calls
  return run


QUIET = "(DEBIAN_FRONTEND=noninteractive)"
INSTALL = [f"apt-get update -q {QUIET}",
           f"apt-get install -y -q --no-install-recommends chromium {QUIET}"]


@pytest.mark.parametrize("mode", [[], ["--if-possible"]])
def test_all_installed_is_one_line_and_no_apt(machine, mode):
  done, calls = machine(*mode, "test servers", "influxdb", "chromium",
                        installed="influxdb chromium")
  assert done.returncode == 0 and calls == []
  assert done.stdout == "test servers: all installed (influxdb chromium)\n"


@pytest.mark.parametrize("mode", [[], ["--if-possible"]])
def test_root_installs_only_what_is_missing(machine, mode):
  done, calls = machine(*mode, "test servers", "influxdb", "chromium", uid="0",
                        installed="influxdb")
  assert done.returncode == 0, done.stderr
  assert done.stdout == "test servers: installing chromium\n"
  assert calls == INSTALL  # as root: no sudo


def test_sudo_without_a_password_installs(machine):
  done, calls = machine("--if-possible", "test servers", "influxdb", "chromium",
                        installed="influxdb", sudo="nopass")
  assert done.returncode == 0, done.stderr
  via_sudo = "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get"
  assert calls == ["sudo -n true",  # the check that sudo asks for no password
                   f"{via_sudo} update -q", INSTALL[0],
                   f"{via_sudo} install -y -q --no-install-recommends chromium", INSTALL[1]]


def test_make_test_skips_quietly_where_it_cannot_install(machine):
  """Not root, sudo wants a password: nothing asked, nothing printed; the test run's last line
  names what is skipped and `make test-servers`."""
  done, calls = machine("--if-possible", "test servers", "influxdb", "chromium")
  assert (done.returncode, done.stdout, done.stderr, calls) == (0, "", "", [])


def test_make_test_servers_asks_sudo_for_the_password(machine):
  done, calls = machine("test servers", "chromium")
  assert done.returncode == 0
  assert calls[0].startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get update")


def test_a_failed_install_is_a_skip_for_make_test_and_an_error_for_make_test_servers(machine):
  done, calls = machine("--if-possible", "test servers", "chromium", uid="0", apt_rc="100")
  assert done.returncode == 0 and calls == INSTALL[:1]
  assert done.stdout.splitlines()[-1] == (
      "test servers: could not install chromium (apt-get failed above): their tests are skipped")
  done, _ = machine("test servers", "chromium", uid="0", apt_rc="100")
  assert done.returncode == 1
  assert done.stderr == "error: test servers: could not install chromium (apt-get failed above)\n"


def test_a_machine_without_apt_skips_for_make_test_and_is_an_error_for_make_test_servers(
    machine, tmp_path):
  for name in ("dpkg-query", "apt-get"):
    (tmp_path / "bin" / name).unlink()
  other_bin = tmp_path / "nothing"  # /usr/bin and /bin are on PATH: use a PATH without them
  other_bin.mkdir()
  env = {"PATH": f"{tmp_path / 'bin'}:{other_bin}"}
  bash = subprocess.run(["which", "bash"], capture_output=True, text=True).stdout.strip()
  args = [bash, str(SCRIPT)]
  done = subprocess.run([*args, "--if-possible", "test servers", "chromium"], env=env,
                        capture_output=True, text=True, timeout=30)
  assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
  done = subprocess.run([*args, "test servers", "chromium"], env=env, capture_output=True,
                        text=True, timeout=30)
  assert done.returncode == 1 and "lacks: chromium" in done.stderr


def make_n(*args: str) -> str:
  env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
  done = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=60, env=env)
  assert done.returncode == 0, done.stderr
  return done.stdout


def test_make_test_installs_the_test_servers_before_the_tests():
  lines = make_n("test").splitlines()
  install = ("infra/apt-install.sh --if-possible 'test servers' influxdb victoria-metrics "
             "chromium fonts-liberation")
  assert install in lines
  pytest_line = next(i for i, line in enumerate(lines) if "-m pytest" in line)
  assert lines.index(install) < pytest_line


def test_make_test_servers_and_image_tools_install_without_a_fallback():
  servers = make_n("test-servers")
  assert servers.startswith("infra/apt-install.sh 'test servers' influxdb victoria-metrics "
                            "chromium fonts-liberation buildah podman")
  assert "infra/apt-install.sh 'image tools' buildah podman skopeo runc debootstrap " \
         "docker-registry" in make_n("image-tools")
  assert "make test-servers" in (REPO_ROOT / ".ci" / "run").read_text()


def test_the_script_is_executable():
  assert os.access(SCRIPT, os.X_OK) and pathlib.Path(SCRIPT).read_text().startswith("#!")
