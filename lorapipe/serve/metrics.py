"""Prometheus metrics of one server, in their own registry (two apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    """Requests, tokens, latencies, batch sizes and adapter residency/swaps."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("lorapipe_requests", "HTTP requests answered.", ["endpoint", "model", "status"],
                                registry=r)
        self.prompt_tokens = Counter("lorapipe_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.completion_tokens = Counter("lorapipe_completion_tokens", "Tokens generated.", ["model"], registry=r)
        self.latency = Histogram("lorapipe_request_latency_seconds", "Time from request to last token.",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("lorapipe_time_to_first_token_seconds", "Time from request to first token.",
                              ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("lorapipe_batch_rows", "Rows in each forward pass.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.adapters_resident = Gauge("lorapipe_adapters_resident", "Adapters loaded in memory (incl. "
                                       "retired versions still finishing requests).", registry=r)
        self.adapter_swaps = Counter("lorapipe_adapter_swaps", "Adapter loads, replacements, unloads and "
                                     "evictions.", ["kind"], registry=r)
        self.adapter_load_failures = Counter("lorapipe_adapter_load_failures", "Adapters refused at load.",
                                             registry=r)
        self.adapter_load_seconds = Histogram("lorapipe_adapter_load_seconds", "Time to verify and load an "
                                              "adapter.", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
                                              registry=r)
        self.in_flight = Gauge("lorapipe_requests_in_flight", "Generation requests not finished yet.", registry=r)
