-- wrk script: every request is one JSON-RPC POST of eth_blockNumber.
-- At the end it prints one machine-readable line for bench/gateway-e2e.sh:
--   RESULT <requests> <req/s> <p50 us> <p99 us> <socket errors> <non-2xx>
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.1f %d %d %d %d\n",
    summary.requests,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50),
    latency:percentile(99),
    e.connect + e.read + e.write + e.timeout,
    e.status))
end
