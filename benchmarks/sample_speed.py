"""Characters per second of `trainctl sample`, with the KV cache and with the full forward
over the context for every character (the run's own mode), on one run.

Rounds alternate between the two so that machine drift hits both alike; each round writes
the same text from the same seed (checked), after one untimed round that compiles graph
mode's forward. The prompt plus --tokens fits the run's window by default (the cache's
case); --tokens past it times the full forwards that follow.

    python benchmarks/sample_speed.py runs/char-transformer-20261205-080000
    python benchmarks/sample_speed.py RUN --tokens 200 --rounds 5 --set mode=eager
"""

from __future__ import annotations

import argparse
import statistics
import time

import trainctl
from trainctl.predict.incremental import decodable
from trainctl.predict.sample import generate
from trainctl.predict.text import language_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--prompt", default="And God said")
    parser.add_argument("--tokens", type=int, default=None, help="default: fill the window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    predictor = trainctl.load(args.run, overrides=args.overrides)
    window = predictor.input.shape[0]
    tokens = args.tokens if args.tokens is not None else window - len(args.prompt)
    model = predictor.restored.components.model
    print(f"{args.run}: {predictor.mode} mode, window {window}, prompt {len(args.prompt)} "
          f"characters + {tokens}; decodable: {decodable(model)}")  # fmt: skip
    language = language_model(predictor)
    prompt = language.encode(args.prompt, "--prompt")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    texts = {cache: generate(language, prompt, tokens, cache=cache) for cache in seconds}
    assert texts[True] == texts[False], "the cache changed the text"
    for _ in range(args.rounds):
        for cache in seconds:
            start = time.perf_counter()
            text = generate(language, prompt, tokens, cache=cache)
            seconds[cache].append(time.perf_counter() - start)
            assert text == texts[cache]
    rates = {cache: tokens / statistics.median(times) for cache, times in seconds.items()}
    for cache, rate in rates.items():
        print(f"{'KV cache' if cache else 'full forward':>12}: {rate:8.1f} characters/s "
              f"(median of {args.rounds})")  # fmt: skip
    print(f"speedup: {rates[True] / rates[False]:.2f}x")


if __name__ == "__main__":
    main()
