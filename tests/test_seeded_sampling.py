"""The vLLM server's seeded sampler (pipeline_lib/sampling/vllm_plugins) draws from the right distribution.

It runs inside vLLM's environment, so these tests run it there, on logits whose distribution is known.
That replicas and batches do not change its draws is tested against real servers in test_replicas.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from pipeline_lib.sampling.environment import vllm_python
from pipeline_lib.sampling.vllm_server import PLUGINS

pytestmark = pytest.mark.skipif(vllm_python() is None, reason="no vLLM environment: run `make setup-vllm`")

PROBS = [0.5, 0.3, 0.15, 0.05]
DRAWS = 20_000

FREQUENCIES = """
import json, sys, torch
from alignflow_seeded_sampling import draw
temperature, top_p, draws = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
logits = torch.tensor(json.loads(sys.argv[4])).log()
def tokens(seeds):
    return draw(logits.repeat(len(seeds), 1), seeds, [temperature] * len(seeds), [top_p] * len(seeds)).tolist()
drawn = [token for start in range(0, draws, 1000) for token in tokens(list(range(start, start + 1000)))]
# One seed, one token, whatever else is in the batch.
alone = [tokens([seed])[0] for seed in range(20)]
print(json.dumps({"frequencies": [drawn.count(t) / draws for t in range(len(logits))], "repeatable": alone == drawn[:20]}))
"""


def _frequencies(temperature: float, top_p: float, probs: list[float] = PROBS) -> dict:
    done = subprocess.run(
        [str(vllm_python()), "-c", FREQUENCIES, str(temperature), str(top_p), str(DRAWS), json.dumps(probs)],
        env={"PYTHONPATH": str(PLUGINS), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def _normalised(weights: list[float]) -> list[float]:
    return [w / sum(weights) for w in weights]


# 20,000 draws: a frequency's standard error is at most 0.0035, so 0.015 is more than four of them.
@pytest.mark.parametrize(
    ("temperature", "top_p", "expected"),
    [
        (1.0, 1.0, PROBS),
        (0.5, 1.0, _normalised([p**2 for p in PROBS])),  # p^(1/T)
        (1.0, 0.7, _normalised([0.5, 0.3, 0, 0])),  # the nucleus: the fewest tokens holding 0.7
        (1.0, 0.9, _normalised([0.5, 0.3, 0.15, 0])),
    ],
    ids=["plain", "temperature-0.5", "top-p-0.7", "top-p-0.9"],
)
def test_draws_follow_the_tempered_nucleus_distribution(temperature, top_p, expected):
    result = _frequencies(temperature, top_p)
    assert result["repeatable"], "a seed draws the same token alone as in a batch"
    assert result["frequencies"] == pytest.approx(expected, abs=0.015)


def test_a_nucleus_wider_than_the_first_search_is_cut_exactly():
    # One likely token, then 4,999 ever less likely ones: 0.9 of the mass takes about 4,000 tokens, past
    # the top-256 search, so the nucleus is found among the top 4,096.
    weights = [2 - i / 5000 for i in range(4999)]
    probs = [0.5, *(0.5 * w / sum(weights) for w in weights)]
    held, size = 0.0, 0
    while held < 0.9:
        held, size = held + probs[size], size + 1
    assert 256 < size < 4096
    frequencies = _frequencies(1.0, 0.9, probs)["frequencies"]
    assert sum(frequencies[size:]) == 0, "nothing outside the nucleus is drawn"
    assert frequencies[0] == pytest.approx(0.5 / held, abs=0.015)
    assert sum(frequencies[1:size]) == pytest.approx(1 - 0.5 / held, abs=0.015)
