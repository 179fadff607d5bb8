-- wrk reporter: one machine-readable line after the run.
-- latency values are in microseconds in wrk; printed in ms.
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d bytes=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeout_err=%d\n",
    summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout))
end
