"""``mrseg review``: one line and exit 2 for a folder with nothing to review or a busy port; the
address printed at start; a token only where the server is reachable from elsewhere."""

from __future__ import annotations

import re
import signal
import socket
import subprocess

from mrseg_processes import mrseg_process, run_mrseg


def test_a_folder_with_nothing_to_review_is_one_line_and_exit_2(tmp_path):
    done = run_mrseg("review", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no cases to review" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "review.csv").exists()


def test_a_busy_port_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a_seg_record.json").write_text('{"name": "a", "input": "", "status": "failed"}')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        done = run_mrseg("review", str(tmp_path), "--port", str(busy.getsockname()[1]))
    assert done.returncode == 2 and "pick another --port" in done.stderr and "Traceback" not in done.stderr


def test_the_address_is_printed_and_a_token_guards_other_hosts(tmp_path):
    (tmp_path / "a_seg_record.json").write_text('{"name": "a", "input": "", "status": "failed"}')
    local = mrseg_process("review", str(tmp_path), "--port", "0")
    try:
        assert re.match(r"mrseg review: http://127\.0\.0\.1:\d+/$", local.stdout.readline().strip())
    finally:
        local.send_signal(signal.SIGINT)
        local.wait(timeout=30)
    assert local.returncode == 0
    shared = mrseg_process("review", str(tmp_path), "--port", "0", "--host", "0.0.0.0")
    try:
        assert re.search(r":\d+/\?token=[\w-]{20,}$", shared.stdout.readline().strip())
    finally:
        shared.send_signal(signal.SIGINT)
        shared.wait(timeout=30)


def test_sigint_stops_a_server_started_with_sigint_ignored(tmp_path):
    """As from ``mrseg review DIR &`` in a script: a background job of a non-interactive shell
    inherits SIGINT ignored, and Python keeps it ignored unless told otherwise."""
    (tmp_path / "a_seg_record.json").write_text('{"name": "a", "input": "", "status": "failed"}')

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    server = mrseg_process("review", str(tmp_path), "--port", "0", preexec_fn=ignore_sigint)
    try:
        assert server.stdout.readline().startswith("mrseg review: http://127.0.0.1:")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()  # SIGINT did nothing: do not leave the server behind
            raise
    assert server.returncode == 0 and "mrseg review: stopped" in err
