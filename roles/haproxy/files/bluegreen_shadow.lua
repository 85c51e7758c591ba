-- bluegreen shadow traffic: mirror a sample of live POST /v1/logs batches to the idle color.
--
-- Shipped by roles/haproxy, loaded with `lua-load` (one shared Lua state for all threads).
-- haproxy.cfg decides which requests are sampled (the `percent` entry of the shadow map, set only
-- at runtime, 0 in the file), captures their body and names the idle color (from the live-color map,
-- as the preview frontend does); this file does the rest, off the live path:
--
--   action  bluegreen_shadow_enqueue (http-response, sampled requests only): O(1), never yields.
--           Puts {body, content type, idle color, live status, live accepted count} on a bounded queue; when
--           the queue is full the batch is dropped and counted, when the captured body is not
--           the whole body (larger than HAProxy's buffer, or chunked) it is skipped and counted.
--   tasks   BLUEGREEN_SHADOW_WORKERS background tasks drain the queue: POST each batch with
--           `X-Bluegreen-Shadow: 1` to BLUEGREEN_SHADOW_PATH on a server of the idle color's backend
--           (round robin over the servers its health checks say are UP), compare status and accepted
--           count with the live answer, count, and discard the answer. Straight to the server, not
--           through the preview frontend: that second pass through HAProxy was the larger part of
--           the mirror's cost on the lb (bench/shadow.py, docs/benchmarks.md).
--   cli     `bluegreen shadow` prints the counters as one JSON object; `bluegreen shadow reset`
--           zeroes them (and prints them zeroed).
--
-- Settings come from the environment (haproxy.cfg `setenv` lines before `lua-load`).

local TARGET_PATH = os.getenv("BLUEGREEN_SHADOW_PATH") or "/v1/logs"
local BACKEND_PREFIX = os.getenv("BLUEGREEN_SHADOW_BACKEND_PREFIX") or "bg_"
local QUEUE_MAX = tonumber(os.getenv("BLUEGREEN_SHADOW_QUEUE") or "") or 256
local WORKERS = tonumber(os.getenv("BLUEGREEN_SHADOW_WORKERS") or "") or 4
local TIMEOUT_MS = tonumber(os.getenv("BLUEGREEN_SHADOW_TIMEOUT_MS") or "") or 5000
local FRONTEND = os.getenv("BLUEGREEN_SHADOW_FRONTEND") or "live"
local IDLE_SLEEP_MS = 10
local KEEP_SAMPLES = 5
local ACCEPTED_HEADER = "x-logplatform-accepted"

-- The queue: items at [head, tail); head == tail means empty. Only Lua code between two yields runs
-- at a time in the shared state, so push and pop need no further locking.
local queue, head, tail = {}, 1, 1

local counters
local mismatch_samples, error_samples

local function now_s()
    local t = core.now()
    return t.sec + t.usec / 1000000
end

local function live_requests_total()
    local fe = core.frontends[FRONTEND]
    if fe == nil then
        return nil
    end
    return tonumber(fe:get_stats()["req_tot"])
end

local function reset(at_load)
    counters = {
        sampled = 0, -- sampled live batches seen by the action
        enqueued = 0, -- put on the queue
        dropped_full = 0, -- not mirrored: the queue was full
        skipped_incomplete = 0, -- not mirrored: the captured body was not the whole body
        mirrored = 0, -- sent to the idle color and answered
        matched = 0, -- answered with the live status and accepted count
        mismatched = 0, -- answered differently
        errors = 0, -- no answer (connection refused, timeout, ...)
    }
    mismatch_samples, error_samples = {}, {}
    counters.reset_at = now_s()
    -- the proxies are known only once the configuration is parsed (register_init)
    counters.live_requests_at_reset = not at_load and live_requests_total() or nil
end

reset(true)
core.register_init(function()
    counters.live_requests_at_reset = live_requests_total()
end)

local function keep(samples, sample)
    samples[#samples + 1] = sample
    if #samples > KEEP_SAMPLES then
        table.remove(samples, 1)
    end
end

core.register_action("bluegreen_shadow_enqueue", { "http-res" }, function(txn)
    counters.sampled = counters.sampled + 1
    local body = txn:get_var("txn.bg_shadow_body")
    local length = tonumber(txn:get_var("txn.bg_shadow_length") or "")
    if body == nil or length == nil or #body ~= length then
        counters.skipped_incomplete = counters.skipped_incomplete + 1
        return
    end
    if tail - head >= QUEUE_MAX then
        counters.dropped_full = counters.dropped_full + 1
        return
    end
    queue[tail] = {
        body = body,
        content_type = txn:get_var("txn.bg_shadow_type"),
        backend = BACKEND_PREFIX .. (txn:get_var("txn.bg_shadow_idle") or ""),
        status = txn.f:status(),
        accepted = tonumber(txn.f:res_hdr(ACCEPTED_HEADER) or ""), -- nil: the live release does not say
    }
    tail = tail + 1
    counters.enqueued = counters.enqueued + 1
end, 0)

local inflight = 0

local TIMEOUT_S = TIMEOUT_MS / 1000
-- The idle backend's UP servers are read from HAProxy at most this often (get_stats is not free).
local SERVERS_TTL_S = 1.0
-- A kept-alive connection is reused only if it was used this recently, so that the frontend's
-- keep-alive timeout can never close it under a request we are sending (that would count as an error).
local REUSE_WITHIN_S = 1.0

-- One HTTP/1.1 exchange on a worker's connection. Not core.httpclient(): in HAProxy 2.6 it retries a
-- POST that timed out (observed: 4 deliveries of one batch), opens a new connection for every request
-- and does not bound the wait by its timeout. Here: one attempt, every read and write bounded by
-- TIMEOUT_S, the connection kept alive between batches.
-- Returns status, headers (lower-case name -> value) or nil, error.
local function exchange(conn, item)
    local request = "POST " .. TARGET_PATH .. " HTTP/1.1\r\n"
        .. "Host: " .. conn.key .. "\r\n"
        .. "User-Agent: bluegreen-shadow\r\n"
        .. "X-Bluegreen-Shadow: 1\r\n"
        .. (item.content_type and ("Content-Type: " .. item.content_type .. "\r\n") or "")
        .. "Content-Length: " .. #item.body .. "\r\n\r\n"
        .. item.body
    local sent, err = conn.socket:send(request)
    if sent == nil then
        return nil, "send: " .. tostring(err)
    end
    local line
    line, err = conn.socket:receive("*l")
    if line == nil then
        return nil, "receive status line: " .. tostring(err)
    end
    local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
    if status == nil then
        return nil, "not an HTTP status line: " .. line:sub(1, 80)
    end
    local headers = {}
    while true do
        line, err = conn.socket:receive("*l")
        if line == nil then
            return nil, "receive headers: " .. tostring(err)
        end
        if line == "" then
            break
        end
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name ~= nil then
            headers[name:lower()] = value
        end
    end
    -- read (and discard) the body, so that the connection can carry the next batch
    local length = tonumber(headers["content-length"] or "")
    if length ~= nil then
        if length > 0 and conn.socket:receive(length) == nil then
            return nil, "receive body: closed or timeout"
        end
    elseif (headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
        while true do
            line = conn.socket:receive("*l")
            local size = line and tonumber(line:match("^%x+"), 16)
            if size == nil then
                return nil, "receive chunked body: bad chunk"
            end
            if size > 0 and conn.socket:receive(size) == nil then
                return nil, "receive chunked body: closed or timeout"
            end
            conn.socket:receive("*l") -- the CRLF after each chunk (and after the last, empty one)
            if size == 0 then
                break
            end
        end
    else
        conn.socket:receive("*a")
        headers["connection"] = "close"
    end
    return status, headers
end

-- "127.0.0.1:9101", "::1:9101" or "[::1]:9101" -> host, port
local function split_addr(addr)
    local host, port = (addr or ""):match("^%[?(.-)%]?:(%d+)$")
    return host, tonumber(port)
end

local servers_cache = {} -- backend name -> {at = seconds, list = {{host, port, key}, ...}}
local next_server = 0

-- The servers of `backend` that its health checks say are UP (or that are not checked), in name order.
local function up_servers(backend)
    local cached = servers_cache[backend]
    local now = now_s()
    if cached ~= nil and now - cached.at < SERVERS_TTL_S then
        return cached.list
    end
    local list = {}
    local proxy = core.backends[backend]
    if proxy ~= nil then
        local names = {}
        for name in pairs(proxy.servers) do
            names[#names + 1] = name
        end
        table.sort(names)
        for _, name in ipairs(names) do
            local server = proxy.servers[name]
            local status = server:get_stats()["status"] or ""
            local host, port = split_addr(server:get_addr())
            if host ~= nil and (status:sub(1, 2) == "UP" or status == "no check") then
                list[#list + 1] = { host = host, port = port, key = host .. ":" .. port }
            end
        end
    end
    servers_cache[backend] = { at = now, list = list }
    return list
end

local function connect(server)
    local socket = core.tcp()
    socket:settimeout(TIMEOUT_S)
    local ok, err = socket:connect(server.host, server.port)
    if ok == nil then
        socket:close()
        return nil, "connect " .. server.key .. ": " .. tostring(err)
    end
    return { socket = socket, key = server.key, used_at = now_s() }
end

local function close(conn)
    if conn ~= nil then
        conn.socket:close()
    end
end

-- Mirror one batch to a server of the idle color, on the worker's connection to that server (in
-- `conns`, server key -> connection, for as long as it is usable: so that the worker can close every
-- connection it holds if this function fails half way).
local function mirror(conns, item)
    local started = now_s()
    local servers = up_servers(item.backend)
    if #servers == 0 then
        counters.errors = counters.errors + 1
        keep(error_samples, { at = started, took_s = 0, error = "no server UP in backend " .. item.backend .. " (the idle color is down)" })
        return
    end
    next_server = next_server % #servers + 1
    local server = servers[next_server]
    local conn = conns[server.key]
    if conn ~= nil and started - conn.used_at > REUSE_WITHIN_S then
        close(conn)
        conn = nil
    end
    local status, headers
    if conn == nil then
        conn, headers = connect(server)
    end
    conns[server.key] = conn
    if conn ~= nil then
        status, headers = exchange(conn, item)
    end
    if status == nil then
        conns[server.key] = nil
        close(conn)
        counters.errors = counters.errors + 1
        keep(error_samples, { at = now_s(), took_s = now_s() - started, error = tostring(headers) })
        return
    end
    conn.used_at = now_s()
    if (headers["connection"] or ""):lower() == "close" then
        conns[server.key] = nil
        close(conn)
    end
    local accepted = tonumber(headers[ACCEPTED_HEADER] or "")
    if accepted == nil then
        -- not an answer of a logplatform ingest (something else listens there): an error of the
        -- shadow path, not a different answer of the new version
        counters.errors = counters.errors + 1
        keep(error_samples, { at = now_s(), took_s = now_s() - started, error = "HTTP " .. status .. " from " .. server.key .. " without " .. ACCEPTED_HEADER })
        return
    end
    counters.mirrored = counters.mirrored + 1
    -- a live color that does not send the header yet (an older release) is compared on status only
    if status == item.status and (item.accepted == nil or accepted == item.accepted) then
        counters.matched = counters.matched + 1
    else
        counters.mismatched = counters.mismatched + 1
        keep(mismatch_samples, {
            at = now_s(),
            took_s = now_s() - started,
            live_status = item.status,
            shadow_status = status,
            live_accepted = item.accepted,
            shadow_accepted = accepted,
        })
    end
end

local function worker()
    local conns = {}
    while true do
        if head == tail then
            -- idle connections are closed soon, so that none keeps an old worker alive after a reload
            for key, conn in pairs(conns) do
                if now_s() - conn.used_at > REUSE_WITHIN_S then
                    close(conn)
                    conns[key] = nil
                end
            end
            core.msleep(IDLE_SLEEP_MS)
        else
            local item = queue[head]
            queue[head] = nil
            head = head + 1
            inflight = inflight + 1
            local ok, err = pcall(mirror, conns, item)
            inflight = inflight - 1
            if not ok then
                -- a bug must not stop the worker: count it, drop its connections, go on
                counters.errors = counters.errors + 1
                keep(error_samples, { at = now_s(), error = "lua: " .. tostring(err) })
                for key, conn in pairs(conns) do
                    pcall(close, conn)
                    conns[key] = nil
                end
            end
        end
    end
end

for _ = 1, WORKERS do
    core.register_task(worker)
end

-- A small JSON encoder for the counters: numbers, strings, booleans, objects, and lists wrapped as
-- {[ARRAY] = list} (an empty Lua table cannot say whether it is a list or an object).
local ARRAY = {}

local function encode(value)
    local kind = type(value)
    if kind == "number" then
        if value ~= value or value == math.huge or value == -math.huge then
            return "null"
        end
        if math.type(value) == "integer" then
            return string.format("%d", value)
        end
        return string.format("%.6f", value)
    elseif kind == "string" then
        return '"' .. value:gsub('[%c"\\]', function(c)
            return string.format("\\u%04x", c:byte())
        end) .. '"'
    elseif kind == "boolean" then
        return tostring(value)
    elseif kind == "table" then
        local parts = {}
        local list = value[ARRAY]
        if list ~= nil then
            for i = 1, #list do
                parts[i] = encode(list[i])
            end
            return "[" .. table.concat(parts, ",") .. "]"
        end
        local keys = {}
        for k in pairs(value) do
            keys[#keys + 1] = k
        end
        table.sort(keys)
        for i, k in ipairs(keys) do
            parts[i] = encode(k) .. ":" .. encode(value[k])
        end
        return "{" .. table.concat(parts, ",") .. "}"
    end
    return "null"
end

local function snapshot()
    local out = {}
    for k, v in pairs(counters) do
        out[k] = v
    end
    out.live_requests_at_reset = nil
    local total = live_requests_total()
    if total ~= nil and counters.live_requests_at_reset ~= nil then
        out.live_requests = total - counters.live_requests_at_reset
    end
    out.queued = tail - head
    out.inflight = inflight
    out.queue_max = QUEUE_MAX
    out.workers = WORKERS
    out.target = "servers of backend " .. BACKEND_PREFIX .. "<idle color>, path " .. TARGET_PATH
    out.frontend = FRONTEND
    out.now = now_s()
    out.mismatch_samples = { [ARRAY] = mismatch_samples }
    out.error_samples = { [ARRAY] = error_samples }
    return out
end

core.register_cli({ "bluegreen", "shadow" }, "bluegreen shadow [reset] : shadow traffic counters as JSON (reset: zero them first)", function(applet, _, _, command)
    if command == "reset" then
        reset()
    elseif command ~= nil and command ~= "" then
        applet:send('{"error":"unknown command: use bluegreen shadow, or bluegreen shadow reset"}\n')
        return
    end
    applet:send(encode(snapshot()) .. "\n")
end)
