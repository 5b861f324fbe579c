#include "worker/serve/serve_metrics.h"

namespace qwha::serve {
namespace {

using Buckets = prometheus::Histogram::BucketBoundaries;

prometheus::Gauge* Gauge(prometheus::Registry& r, const std::string& name,
                         const std::string& help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Counter* Counter(prometheus::Registry& r, const std::string& name,
                             const std::string& help) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}

prometheus::Histogram* Histogram(prometheus::Registry& r, const std::string& name,
                                 const std::string& help, Buckets buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({},
                                                                             std::move(buckets));
}

}  // namespace

ServeMetrics::ServeMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  requests_ = &prometheus::BuildCounter()
                   .Name("qwha_serve_requests_total")
                   .Help("Generate calls ended, by finish reason.")
                   .Register(r);
  for (const char* reason : {"length", "eos", "stop_string", "cancelled", "error", "rejected"}) {
    requests_->Add({{"finish_reason", reason}});
  }
  prompt_tokens_ = Counter(r, "qwha_serve_prompt_tokens_total", "Prompt tokens processed.");
  generated_tokens_ = Counter(r, "qwha_serve_generated_tokens_total", "Completion tokens sampled.");
  const Buckets latency{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  ttft_ = Histogram(r, "qwha_serve_time_to_first_token_seconds",
                    "Time from accepting a request to its first token.", latency);
  inter_token_ = Histogram(r, "qwha_serve_inter_token_latency_seconds",
                           "Time between consecutive tokens of a request.", latency);
  duration_ = Histogram(r, "qwha_serve_request_duration_seconds",
                        "Time from accepting a request to its end.",
                        Buckets{0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300});
  batch_ = Histogram(r, "qwha_serve_step_batch_size", "Requests in each engine step.",
                     Buckets{1, 2, 4, 8, 16, 32, 64, 128, 256});
  running_ = Gauge(r, "qwha_serve_running_requests", "Requests holding a KV slot.");
  waiting_ = Gauge(r, "qwha_serve_waiting_requests", "Requests waiting for a KV slot.");
  adapters_loaded_ = Gauge(r, "qwha_serve_adapters_loaded", "Adapter versions in memory.");
  adapter_bytes_ =
      Gauge(r, "qwha_serve_adapter_memory_bytes", "Device bytes of the loaded adapters.");
  adapter_budget_ =
      Gauge(r, "qwha_serve_adapter_memory_budget_bytes", "The adapter memory budget.");
  hits_ = Counter(r, "qwha_serve_adapter_cache_hits_total", "Requests whose adapter was loaded.");
  misses_ = Counter(r, "qwha_serve_adapter_cache_misses_total",
                    "Requests whose adapter had to be loaded first.");
  evictions_ = Counter(r, "qwha_serve_adapter_cache_evictions_total",
                       "Adapter versions evicted to stay within the budget.");
  load_seconds_ = Histogram(r, "qwha_serve_adapter_load_seconds",
                            "Download, verification and load of an adapter.",
                            Buckets{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
  base_bytes_ =
      Gauge(r, "qwha_serve_base_memory_bytes", "Device bytes of the served base weights.");
  kv_bytes_ = Gauge(r, "qwha_serve_kv_cache_bytes", "Device bytes of the KV cache.");
}

EngineObserver ServeMetrics::EngineHooks() {
  EngineObserver o;
  o.on_first_token = [this](double s) {
    ttft_->Observe(s);
    generated_tokens_->Increment();
  };
  o.on_next_token = [this](double s) {
    inter_token_->Observe(s);
    generated_tokens_->Increment();
  };
  o.on_step = [this](int64_t batch, double) { batch_->Observe(static_cast<double>(batch)); };
  o.on_finish = [this](FinishReason reason, const GenerationUsage& usage) {
    requests_->Add({{"finish_reason", FinishReasonName(reason)}}).Increment();
    prompt_tokens_->Increment(static_cast<double>(usage.prompt_tokens));
    duration_->Observe(usage.total_seconds);
  };
  return o;
}

AdapterCacheObserver ServeMetrics::CacheHooks() {
  AdapterCacheObserver o;
  o.on_hit = [this] { hits_->Increment(); };
  o.on_miss = [this] { misses_->Increment(); };
  o.on_evict = [this](int64_t) { evictions_->Increment(); };
  o.on_load = [this](double s) { load_seconds_->Observe(s); };
  o.on_change = [this](int64_t loaded, int64_t bytes) {
    adapters_loaded_->Set(static_cast<double>(loaded));
    adapter_bytes_->Set(static_cast<double>(bytes));
  };
  return o;
}

void ServeMetrics::SetQueue(int64_t running, int64_t waiting) {
  running_->Set(static_cast<double>(running));
  waiting_->Set(static_cast<double>(waiting));
}

void ServeMetrics::SetStatic(int64_t base_bytes, int64_t kv_bytes, int64_t adapter_budget_bytes) {
  base_bytes_->Set(static_cast<double>(base_bytes));
  kv_bytes_->Set(static_cast<double>(kv_bytes));
  adapter_budget_->Set(static_cast<double>(adapter_budget_bytes));
}

}  // namespace qwha::serve
