"""The policy versions loaded in this server's engine: the active one in its weights, others as adapters.

Swapping the active version pauses the engine with its requests kept (``pause_generation(mode="keep")``), reloads
the merged weights, clears the prefix cache (its blocks hold keys and values of the old weights) and resumes:
requests wait about a second and none fails. A request in flight during a swap goes on with the new weights, so
``on_swap`` listeners are told, and the completion record says from which token the weights changed.
Adapters of other versions are differences to the active version, so a swap leaves them stale: they are rebuilt
for the new active version when next asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from vllm.lora.request import LoRARequest
from vllm.v1.engine.async_llm import AsyncLLM

from core.checksums import mismatches
from core.config import Settings
from core.policy import ADAPTER_DIRNAME, BASE_VERSION, adapter_path
from server.versions.weights import BrokenVersion, build_difference, build_merged

log = logging.getLogger(__name__)


class LoadedVersions:
    def __init__(self, engine: AsyncLLM, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.active = BASE_VERSION
        self.cache = settings.data_dir / "serving"
        self._adapters: dict[str, LoRARequest] = {}
        self._lora_ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._builds: dict[str, asyncio.Future[Path]] = {}
        self.on_swap: list[Callable[[str], None]] = []
        self._checked: set[str] = set()
        self.swaps = 0
        """Swaps of the active version so far: a change of it tells a swap even back to the same version."""

    def _adapter(self, version: str) -> Path | None:
        """The version's adapter, once checked against the checksums its trainer recorded (versions never change,
        so once is enough)."""
        adapter = adapter_path(self.settings.versions_dir, version)
        if adapter is None or version in self._checked:
            return adapter
        if not adapter.is_dir():
            raise BrokenVersion(f"version {version} has no adapter at {adapter}")
        if damaged := mismatches(adapter.parent, ADAPTER_DIRNAME):
            raise BrokenVersion(f"version {version}'s files do not match their recorded checksums: {damaged[:3]}")
        self._checked.add(version)
        return adapter

    async def prepare(self, version: str) -> Path:
        """Build the version's merged weights ahead of a swap (seconds of CPU, so not inside the pause); callers
        asking for the same version meanwhile share one build."""
        if version not in self._builds:
            out = self.cache / "merged" / version
            args = (self.settings.model_path, self._adapter(version), out)
            build = asyncio.ensure_future(asyncio.to_thread(build_merged, *args))
            build.add_done_callback(lambda _: self._builds.pop(version, None))
            self._builds[version] = build
        return await asyncio.shield(self._builds[version])

    async def make_active(self, version: str) -> None:
        """Put the version's weights in the engine."""
        if version == self.active:
            return
        log.info("active version swap started", extra={"version": version, "from": self.active})
        weights = await self.prepare(version)
        async with self._lock:
            started = time.perf_counter()
            await self.engine.pause_generation(mode="keep", clear_cache=False)
            try:
                await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": str(weights)})
                await self.engine.reset_prefix_cache()
                self.active = version
                self.swaps += 1
                self._adapters.clear()
                for listener in self.on_swap:
                    listener(version)
            finally:
                await self.engine.resume_generation()
            paused = time.perf_counter() - started
        log.info("active version swapped", extra={"version": version, "paused_s": round(paused, 3)})
        await self._release_freed_memory()

    async def _release_freed_memory(self) -> None:
        """After the old weights or an adapter were dropped, outside the pause (``server/worker_extension.py``). A
        failure costs memory, not the swap, so it is logged and nothing more."""
        try:
            await self.engine.collective_rpc("release_freed_memory")
        except Exception:  # the engine's RPC fails in many ways; none of them undoes the swap
            log.warning("the engine worker did not release freed memory", exc_info=True)

    @asynccontextmanager
    async def trainee(self, folder: Path) -> AsyncIterator[tuple[int, LoRARequest]]:
        """A trainer's adapter in the making (``server/rollouts_api/``), served over the active version for the
        block's length, then unloaded; with the count of swaps it was built after. A swap meanwhile makes it stale:
        the caller compares that count with ``swaps`` after."""
        async with self._lock:
            swaps = self.swaps
            out = self.cache / "trainees" / uuid.uuid4().hex
            try:
                request = await self._load_over_active(folder, out, f"the adapter {folder.name}")
            except Exception as exc:  # a malformed adapter fails in many ways: each is a broken adapter
                shutil.rmtree(out, ignore_errors=True)
                if isinstance(exc, BrokenVersion):
                    raise
                raise BrokenVersion(f"the adapter {folder.name} cannot be served: {exc}") from exc
        try:
            yield swaps, request
        finally:
            try:
                await self.engine.remove_lora(request.lora_int_id)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            await self._release_freed_memory()

    async def lora_for(self, version: str) -> LoRARequest | None:
        """What a request for ``version`` must carry: nothing for the active version, else its adapter,
        built and loaded on first use."""
        if version == self.active:
            return None
        async with self._lock:
            if version in self._adapters:
                return self._adapters[version]
            out = self.cache / "adapters" / f"{version}-over-{self.active}"
            request = await self._load_over_active(self._adapter(version), out, f"the adapter of {version}")
            self._adapters[version] = request
            log.info("adapter loaded", extra={"version": version, "over": self.active})
            return request

    async def _load_over_active(self, adapter: Path | None, out: Path, what: str) -> LoRARequest:
        """Build ``adapter``'s difference to the active version in ``out`` and load it into the engine. The caller
        holds the lock, so the active version cannot change meanwhile."""
        folder = await asyncio.to_thread(build_difference, adapter, self._adapter(self.active), out)
        request = LoRARequest(lora_name=out.name, lora_int_id=next(self._lora_ids), lora_path=str(folder))
        try:
            await self.engine.add_lora(request)
        except Exception as exc:  # vLLM raises plain exceptions of several kinds for a bad adapter
            raise BrokenVersion(f"the engine refused {what}: {exc}") from exc
        return request
