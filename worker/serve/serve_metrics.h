// The inference server's Prometheus metrics (served at --http /metrics):
//
//   qwha_serve_requests_total{finish_reason}         Generate calls ended: length, eos,
//                                                    stop_string, cancelled, error, rejected
//   qwha_serve_prompt_tokens_total                   prompt tokens processed
//   qwha_serve_generated_tokens_total                completion tokens sampled
//   qwha_serve_time_to_first_token_seconds           histogram: accepted → first token
//   qwha_serve_inter_token_latency_seconds           histogram: a request's consecutive tokens
//   qwha_serve_request_duration_seconds              histogram: accepted → finished
//   qwha_serve_step_batch_size                       histogram: requests per engine step
//   qwha_serve_running_requests / _waiting_requests  gauges
//   qwha_serve_adapters_loaded                       adapter versions in memory
//   qwha_serve_adapter_memory_bytes                  their bytes (budget:
//   _adapter_memory_budget_bytes) qwha_serve_adapter_cache_hits_total / _misses_total /
//   _evictions_total qwha_serve_adapter_load_seconds                  histogram: download + verify
//   + load qwha_serve_base_memory_bytes, qwha_serve_kv_cache_bytes
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "worker/serve/adapter_cache.h"
#include "worker/serve/engine.h"

namespace qwha::serve {

class ServeMetrics {
 public:
  ServeMetrics();
  ServeMetrics(const ServeMetrics&) = delete;
  ServeMetrics& operator=(const ServeMetrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Hooks to pass to Engine::Create and the AdapterCache.
  EngineObserver EngineHooks();
  AdapterCacheObserver CacheHooks();

  void Rejected() { requests_->Add({{"finish_reason", "rejected"}}).Increment(); }
  void SetQueue(int64_t running, int64_t waiting);
  void SetStatic(int64_t base_bytes, int64_t kv_bytes, int64_t adapter_budget_bytes);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* inter_token_;
  prometheus::Histogram* duration_;
  prometheus::Histogram* batch_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* adapters_loaded_;
  prometheus::Gauge* adapter_bytes_;
  prometheus::Gauge* adapter_budget_;
  prometheus::Counter* hits_;
  prometheus::Counter* misses_;
  prometheus::Counter* evictions_;
  prometheus::Histogram* load_seconds_;
  prometheus::Gauge* base_bytes_;
  prometheus::Gauge* kv_bytes_;
};

}  // namespace qwha::serve
