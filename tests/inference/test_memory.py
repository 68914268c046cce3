"""Heap reuse between tiles: freed blocks come back without fresh page faults, and settings restore.

Each check runs in a fresh Python process: how glibc places a block depends on everything the
process allocated before, so inside the test session the counts would depend on test order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from mrseg.inference.memory import HEAP_BLOCK_LIMIT, heap_reuse_supported

BLOCK = 16 * 2**20  # far above glibc's default mmap threshold, under the heap limit while reusing
PAGES = BLOCK // 4096

pytestmark = pytest.mark.skipif(not heap_reuse_supported(), reason="needs glibc (Linux)")

PRELUDE = f"""
import json, resource
import torch
from mrseg.inference import memory
from mrseg.inference.memory import reuse_freed_memory

def faults(size={BLOCK}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(size, dtype=torch.uint8)  # torch, like the networks (numpy asks for huge pages)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del block
    return after - before
"""


def fresh_process(body: str) -> dict:
    """Run ``body`` after the prelude in a new interpreter; it prints one JSON object."""
    code = PRELUDE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_outside_every_large_block_is_fresh_zeroed_memory():
    result = fresh_process("""
        faults()
        print(json.dumps({"again": faults()}))
    """)
    assert result["again"] > PAGES // 2


def test_inside_a_freed_block_is_reused_without_page_faults():
    result = fresh_process("""
        with reuse_freed_memory():
            faults()  # grows the heap once
            inside = min(faults() for _ in range(3))  # glibc may place the first few elsewhere
        print(json.dumps({"inside": inside, "after": faults()}))
    """)
    assert result["inside"] < PAGES // 20
    assert result["after"] > PAGES // 2  # the trimmed heap gave the pages back after the block


def test_inside_blocks_above_the_limit_still_go_back_on_free():
    big = 2 * HEAP_BLOCK_LIMIT
    result = fresh_process(f"""
        with reuse_freed_memory():
            faults({big})
            inside = min(faults({big}) for _ in range(3))
        print(json.dumps({{"inside": inside}}))
    """)
    assert result["inside"] > big // 4096 // 2  # whole activations do not fragment the heap


def test_disabled_is_a_no_op():
    result = fresh_process("""
        with reuse_freed_memory(enabled=False):
            faults()
            inside = faults()
        print(json.dumps({"inside": inside}))
    """)
    assert result["inside"] > PAGES // 2


def test_nested_uses_restore_only_at_the_outermost_exit():
    result = fresh_process("""
        with reuse_freed_memory():
            with reuse_freed_memory():
                faults()
            depth = memory._depth
            inside = min(faults() for _ in range(3))
        print(json.dumps({"depth": depth, "inside": inside, "after": memory._depth}))
    """)
    assert result == {"depth": 1, "inside": result["inside"], "after": 0}
    assert result["inside"] < PAGES // 20


def test_settings_restore_after_an_exception():
    result = fresh_process("""
        try:
            with reuse_freed_memory():
                faults()
                raise RuntimeError("tile failed")
        except RuntimeError:
            pass
        print(json.dumps({"depth": memory._depth, "after": faults()}))
    """)
    assert result["depth"] == 0
    assert result["after"] > PAGES // 2
