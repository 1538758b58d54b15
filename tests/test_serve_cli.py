"""examples/web/serve.mjs's command line (issue 18 part 5): a bad --port / --host / option is one line and exit 2, a
port in use or an address the machine does not have one line and exit 1 / 2, never a Node stack trace; a good command
line serves. Every server here binds 127.0.0.1 (or nothing)."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from host_exports import ROOT, node_ready

pytestmark = pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))

SERVE = str(ROOT / "examples" / "web" / "serve.mjs")


@pytest.fixture()
def export_dir(tmp_path: Path) -> Path:
    (tmp_path / "manifest.json").write_text("{}")  # serve.mjs only checks that it is a file; the page reads it
    return tmp_path


def _serve(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["node", SERVE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "    at " not in proc.stderr and "node:internal" not in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout  # never "serving ..."
    return proc.stderr


# arguments -> (exit code, words the line must hold)
BAD = {
    "port-word": (["--port", "abc"], 2, "--port must be an integer in [1, 65535]"),
    "port-0": (["--port", "0"], 2, "[1, 65535], got \"0\""),
    "port-65536": (["--port", "65536"], 2, "[1, 65535], got \"65536\""),
    "port-negative": (["--port=-1"], 2, "[1, 65535]"),
    "port-float": (["--port", "80.5"], 2, "[1, 65535]"),
    "port-exponent": (["--port", "8e3"], 2, "[1, 65535]"),
    "port-hex": (["--port", "0x50"], 2, "[1, 65535]"),
    "port-empty": (["--port", ""], 2, "[1, 65535]"),
    "port-huge": (["--port", "9" * 400], 2, "[1, 65535]"),
    "port-missing-value": (["--port"], 2, "argument missing"),
    "host-spaces": (["--host", "bad host!"], 2, "--host must be an IP address or a host name"),
    "host-empty": (["--host", ""], 2, "--host must be"),
    "host-url": (["--host", "http://127.0.0.1"], 2, "--host must be"),
    "host-not-here": (["--host", "203.0.113.77", "--port", "8000"], 2, "not an address of this machine"),
    "unknown-option": (["--prot", "3"], 2, "Unknown option '--prot'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_command_line_is_one_line(export_dir, case):
    args, code, words = BAD[case]
    proc = _serve(str(export_dir), *args)
    assert proc.returncode == code, proc.stderr
    assert words in _one_line(proc)


def test_missing_export_is_one_line(tmp_path):
    proc = _serve(str(tmp_path / "nowhere"), "--port", "8000")
    assert proc.returncode == 1 and "has no manifest.json" in _one_line(proc)
    (tmp_path / "dir" / "manifest.json").mkdir(parents=True)  # a directory named manifest.json is not one
    proc = _serve(str(tmp_path / "dir"), "--port", "8000")
    assert proc.returncode == 1 and "has no manifest.json" in _one_line(proc)
    proc = _serve()
    assert proc.returncode == 2 and "usage:" in _one_line(proc)


def test_port_in_use_is_one_line_exit_1(export_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _serve(str(export_dir), "--port", str(port), "--host", "127.0.0.1")
    assert proc.returncode == 1, proc.stderr
    assert f"--port {port}: the port is in use on 127.0.0.1" in _one_line(proc)


def test_good_command_line_serves(export_dir):
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["node", SERVE, str(export_dir), "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith(f"serving http://127.0.0.1:{port}/"), (line, server.stderr.read() if server.poll() else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/export/manifest.json", timeout=10) as response:
            assert response.status == 200 and response.read() == b"{}"
    finally:
        server.kill()
        server.wait(timeout=10)
