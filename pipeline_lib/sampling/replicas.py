"""Several vLLM servers of one model sharing a stage's shards: each shard goes to whichever is free.

``run_shards`` is the one loop both shard writers (sampling, judging) hand
their unfinished shards to. With one sampler it runs them in order, as
always; with a ``ReplicaSet`` every live replica has a worker thread that
takes the next shard from a shared queue, so a fast or idle replica never
waits for a slow one. Results come back in shard order, and a shard's files
never say which replica made it: greedy tokens are the same on every replica
(same model, same server settings), so a finished shard is reused whatever
the number of replicas.

A replica that goes away (connection refused or reset, HTTP 5xx, its
process gone) takes no more shards, and the shard it held goes back to the
front of the queue for another one. Servers alignflow started are not
restarted mid-stage, unlike the single-server case: the others carry on, and
the next stage starts a fresh set.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline_lib.core import interrupts, progress
from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling.base import Sample, Sampler, SamplingParams
from pipeline_lib.sampling.vllm_server import ServerError, ServerOptions, replica_devices

if TYPE_CHECKING:
    from pipeline_lib.sampling.vllm_client import VLLMSampler

T = TypeVar("T")
Job = Callable[[Any], T]  # one shard's work, given the sampler (a replica) that does it


class AllReplicasDown(ServerError, UserError):
    """No replica is left; a UserError too, so the command prints it as one line (finished shards are kept)."""


def run_shards(sampler: Sampler | None, jobs: Sequence[Job], shards: Sequence[int]) -> tuple[list[Any], dict[str, Any]]:
    """Each job's result in the jobs' order, and what the replicas did (nothing to say for one sampler).

    ``shards`` names each job's shard, for the console and the stage's stats.
    """
    if isinstance(sampler, ReplicaSet):
        return sampler.run(jobs, shards)
    results = []
    for job in jobs:
        interrupts.check()  # a ctrl-C swallowed during the last shard stops here, with that shard kept
        results.append(job(sampler))
    return results, {}


class ReplicaSet(Sampler):
    """vLLM samplers of one model behind the ``Sampler`` interface; a single call goes to one live replica."""

    name = "vllm"

    def __init__(self, members: list[VLLMSampler]) -> None:
        self.members = members
        self.model_id = members[0].model_id
        self.down: dict[int, str] = {}  # member index -> why it is out, for the rest of this set's life
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """A live replica's API root, for tools that take one server (lm-eval)."""
        return self._live()[0].url

    @property
    def model_name(self) -> str:
        return self.members[0].model_name

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Sample]:
        return self.run([lambda replica: replica.generate(prompts, params)], [0])[0][0]

    def choice_logprobs(self, prompts: list[str], candidates: Sequence[str]) -> list[list[float]]:
        return self.run([lambda replica: replica.choice_logprobs(prompts, candidates)], [0])[0][0]

    def close(self) -> None:
        for index, member in enumerate(self.members):
            if index in self.down and member.server is not None:
                member.server.stop()  # alive with a failed engine (HTTP 5xx): not one to keep warm
            member.close()

    def run(self, jobs: Sequence[Job], shards: Sequence[int]) -> tuple[list[Any], dict[str, Any]]:
        """Each job's result, in order; one worker thread per live replica takes the next job when it is free."""
        todo = deque(range(len(jobs)))
        results: dict[int, Any] = {}
        failures: list[dict[str, Any]] = []
        served = {member.url: 0 for member in self.members}
        state = threading.Condition()
        running = 0
        stopped: list[BaseException] = []

        def take() -> int | None:
            nonlocal running
            with state:
                # An empty queue may refill while others work: a shard whose replica goes down comes back.
                while not todo and running and not stopped:
                    state.wait()
                if not todo or stopped:
                    return None
                running += 1
                return todo.popleft()

        def serve(index: int) -> None:
            nonlocal running
            member = self.members[index]
            while (job := take()) is not None:
                try:
                    interrupts.check()
                    result = jobs[job](member)
                except ServerError as error:
                    with state:
                        running -= 1
                        todo.appendleft(job)
                        failures.append(self._lose(index, shards[job], error))
                        state.notify_all()
                    return
                except BaseException as error:  # a bug, a rejected request, ctrl-C: the whole run stops
                    with state:
                        running -= 1
                        stopped.append(error)
                        state.notify_all()
                    return
                with state:
                    running -= 1
                    results[job] = result
                    served[member.url] += 1
                    state.notify_all()

        # Each replica's rows count on the display of the stage that deals the shards.
        serve_here = progress.carry_display(serve)
        workers = [threading.Thread(target=serve_here, args=(i,), name=f"replica-{i}", daemon=True) for i in self._live_indices()]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        except BaseException as error:
            # ctrl-C here: no replica starts another shard; those in flight end with their servers.
            with state:
                stopped.append(error)
                state.notify_all()
            raise
        if stopped:
            raise stopped[0]
        if len(results) < len(jobs):
            raise AllReplicasDown(self._all_down(len(results), len(jobs)))
        stats = {"replicas": len(self.members), "replica_failures": failures, "shards_per_replica": served}
        return [results[i] for i in range(len(jobs))], stats

    def _live_indices(self) -> list[int]:
        return [i for i in range(len(self.members)) if i not in self.down]

    def _live(self) -> list[VLLMSampler]:
        live = [self.members[i] for i in self._live_indices()]
        if not live:
            raise AllReplicasDown(self._all_down(0, 0))
        return live

    def _lose(self, index: int, shard: int, error: ServerError) -> dict[str, Any]:
        """Take a replica out; the console line and the stats record say which, why, and which shard moved."""
        url, why = self.members[index].url, _first_line(error)
        with self._lock:
            self.down[index] = why
            left = len(self.members) - len(self.down)
        where = "moves to another replica" if left else "has no replica left"
        print(f"vllm: replica {url} is down ({why}); shard {shard} {where}", file=sys.stderr, flush=True)
        return {"replica": url, "shard": shard, "error": why}

    def _all_down(self, finished: int, total: int) -> str:
        lost = "; ".join(f"{self.members[i].url} ({why})" for i, why in sorted(self.down.items()))
        kept = f"; {finished} of the {total} shards to make were finished and are kept for a rerun" if total else ""
        return f"every vLLM replica is down: {lost}{kept}"


def open_replicas(
    model_path: str | Path, options: ServerOptions, batch_size: int, replicas: int, urls: list[str], keep_warm: int
) -> ReplicaSet:
    """Connect to the running servers ``urls``, or start ``replicas`` servers, each on its share of the devices."""
    from pipeline_lib.sampling.vllm_client import VLLMSampler

    common = {"batch_size": batch_size, "failover": True}
    if urls:
        opens = [lambda url=url: VLLMSampler(model_path, options, base_url=url, **common) for url in urls]
    else:
        # A model's replicas count as one server for keep_warm: the pool keeps as many models warm as before.
        keep = keep_warm * replicas
        shares = [replace(options, devices=devices) for devices in replica_devices(replicas)]
        opens = [lambda share=share: VLLMSampler(model_path, share, keep_warm=keep, **common) for share in shares]
    # Started side by side: on GPUs each start takes as long as one.
    with ThreadPoolExecutor(max_workers=len(opens), thread_name_prefix="replica-start") as pool:
        futures = [pool.submit(open_one) for open_one in opens]
    members, errors = [], []
    for future in futures:
        try:
            members.append(future.result())
        except BaseException as error:
            errors.append(error)
    if errors:
        for member in members:
            member.close()
        raise errors[0]
    return ReplicaSet(members)


def _first_line(error: BaseException) -> str:
    # A server's failure ends with its log's last lines; its first line says what happened and where the log is.
    return str(error).splitlines()[0].removesuffix(", last lines:").strip() if str(error) else type(error).__name__
