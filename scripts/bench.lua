-- bench.lua: the wrk script behind scripts/bench.  One request, repeated:
-- BENCH_METHOD (GET), BENCH_BEARER (an Authorization bearer, or none) and
-- BENCH_BODY (a JSON body, or none).  BENCH_COUNT stops each of the
-- BENCH_THREADS threads after its share of that many answers.  done() prints one line of key=value
-- figures for scripts/bench and, when BENCH_LAT_FILE is set, writes the
-- request count and a ladder of latency percentiles there ("percent
-- microseconds" lines), from which scripts/bench merges a round's slices.

local method = os.getenv("BENCH_METHOD") or "GET"
local bearer = os.getenv("BENCH_BEARER") or ""
local body = os.getenv("BENCH_BODY")
local count = tonumber(os.getenv("BENCH_COUNT") or "")
local lat_file = os.getenv("BENCH_LAT_FILE")

local threads = {}
local req

function setup(thread)
	table.insert(threads, thread)
	thread:set("id", #threads)
end

function init(args)
	local headers = {}
	if bearer ~= "" then
		headers["Authorization"] = "Bearer " .. bearer
	end
	if body ~= nil then
		headers["Content-Type"] = "application/json"
	end
	req = wrk.format(method, nil, headers, body)
	statuses = {}
	answered = 0
	if count ~= nil then
		-- this thread's share of the count, the remainder to the first threads
		local n = tonumber(os.getenv("BENCH_THREADS") or "1")
		quota = math.floor(count / n) + (id <= count % n and 1 or 0)
	end
end

function request()
	return req
end

function response(status)
	statuses[status] = (statuses[status] or 0) + 1
	answered = answered + 1
	if quota ~= nil and answered >= quota then
		wrk.thread:stop()
	end
end

function done(summary, latency)
	local merged, ok, non2xx = {}, 0, 0
	for _, thread in ipairs(threads) do
		for status, n in pairs(thread:get("statuses")) do
			merged[status] = (merged[status] or 0) + n
			if status >= 200 and status < 300 then
				ok = ok + n
			else
				non2xx = non2xx + n
			end
		end
	end
	local codes = {}
	for status in pairs(merged) do
		table.insert(codes, status)
	end
	table.sort(codes)
	local parts = {}
	for _, status in ipairs(codes) do
		table.insert(parts, status .. ":" .. merged[status])
	end
	local e = summary.errors
	io.write(string.format("requests=%d ok=%d non2xx=%d errors=%d secs=%.6f p50_ms=%.3f p99_ms=%.3f statuses=%s\n",
		summary.requests, ok, non2xx, e.connect + e.read + e.write + e.timeout,
		summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
		table.concat(parts, ",")))
	if lat_file ~= nil then
		-- a ladder of percentiles, fine towards the tail: wrk finds each by
		-- walking its histogram up from the minimum, so this stays cheap
		-- where the histogram's full range (up to the timeout) would not
		local f = assert(io.open(lat_file, "w"))
		f:write(string.format("%d\n", summary.requests))
		for i = 1, 1000 do
			local p = i <= 900 and i / 10 or 90 + (i - 900) / 10 * 0.99
			f:write(string.format("%.3f %d\n", p, latency:percentile(p)))
		end
		f:close()
	end
end
