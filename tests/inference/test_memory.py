"""Heap reuse between tiles: freed blocks come back without fresh page faults, and settings restore."""

from __future__ import annotations

import resource

import pytest
import torch

from mrseg.inference import memory
from mrseg.inference.memory import heap_reuse_supported, reuse_freed_memory

BLOCK = 64 * 2**20  # far above glibc's mmap threshold
PAGES = BLOCK // 4096

pytestmark = pytest.mark.skipif(not heap_reuse_supported(), reason="needs glibc (Linux)")


def faults_of_a_touched_block() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(BLOCK, dtype=torch.uint8)  # torch, like the networks (numpy asks for huge pages)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del block
    return after - before


def test_outside_every_large_block_is_fresh_zeroed_memory():
    faults_of_a_touched_block()
    assert faults_of_a_touched_block() > PAGES // 2


def test_inside_a_freed_block_is_reused_without_page_faults():
    with reuse_freed_memory():
        faults_of_a_touched_block()  # grows the heap once
        assert faults_of_a_touched_block() < PAGES // 20
    assert faults_of_a_touched_block() > PAGES // 2  # defaults are back after the block


def test_disabled_is_a_no_op():
    with reuse_freed_memory(enabled=False):
        faults_of_a_touched_block()
        assert faults_of_a_touched_block() > PAGES // 2


def test_nested_uses_restore_only_at_the_outermost_exit():
    with reuse_freed_memory():
        with reuse_freed_memory():
            faults_of_a_touched_block()
        assert memory._depth == 1
        assert faults_of_a_touched_block() < PAGES // 20
    assert memory._depth == 0


def test_settings_restore_after_an_exception():
    with pytest.raises(RuntimeError), reuse_freed_memory():
        raise RuntimeError("tile failed")
    assert memory._depth == 0
    assert faults_of_a_touched_block() > PAGES // 2
