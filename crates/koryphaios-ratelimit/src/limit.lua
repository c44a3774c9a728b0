-- Koryphaios rate limits: every check of one request, decided atomically and all-or-nothing.
-- Mirrors koryphaios_core::ratelimit::arithmetic exactly.
--
-- KEYS[i]   the state key of check i
-- ARGV[1]   "now" in Unix ms for tests, or "" to use the server clock (instances share keys)
-- ARGV[1 + 5*(i-1) + 1 .. 5]  check i: kind ("sw" | "tb"),
--           mode ("c" consume | "p" peek | "f" force | "r" refund one earlier consume),
--           p1, p2, p3 = limit, window_ms, bucket_ms (sw) or capacity, refill_per_minute, 0 (tb)
-- Returns a flat array: allowed (0/1), then per check: allowed, limit, remaining, reset_at_ms, retry_after_ms.
local now
if ARGV[1] ~= "" then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function floor_div(a, b) return math.floor(a / b) end

local n = #KEYS
local views = {}
local all_allowed = 1
for i = 1, n do
  local base = 1 + (i - 1) * 5
  local kind, mode = ARGV[base + 1], ARGV[base + 2]
  local p1, p2, p3 = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
  local v = { kind = kind, mode = mode, p1 = p1, p2 = p2, p3 = p3 }
  if kind == "sw" then
    v.oldest = floor_div(now - p2, p3)
    v.current = floor_div(now, p3)
    v.count = 0
    v.stale = {}
    local fields = redis.call('HGETALL', KEYS[i])
    for j = 1, #fields, 2 do
      local index, c = tonumber(fields[j]), tonumber(fields[j + 1])
      if index >= v.oldest then
        v.count = v.count + c
        if v.first == nil or index < v.first then v.first = index end
      else
        v.stale[#v.stale + 1] = fields[j]
      end
    end
    v.allowed = (mode == "f") or (mode == "r") or (v.count < p1)
  else
    local rate = p2 / 60000.0
    v.rate = rate
    local h = redis.call('HMGET', KEYS[i], 't', 'ts')
    local tokens, ts = tonumber(h[1]), tonumber(h[2])
    if tokens == nil or ts == nil then
      tokens = p1
    elseif now > ts then
      tokens = math.min(tokens + (now - ts) * rate, p1)
    end
    v.tokens = tokens
    v.allowed = (mode == "f") or (mode == "r") or (tokens >= 1.0)
  end
  if not v.allowed then all_allowed = 0 end
  views[i] = v
end

local out = { all_allowed }
for i = 1, n do
  local v = views[i]
  local consume = (v.mode == "f") or (v.mode == "c" and all_allowed == 1)
  local remaining, reset_at, retry_after
  if v.kind == "sw" and v.mode == "r" then
    -- Take one back from the newest counted sub-window (never below zero).
    local newest = nil
    local fields = redis.call('HGETALL', KEYS[i])
    for j = 1, #fields, 2 do
      local index, c = tonumber(fields[j]), tonumber(fields[j + 1])
      if index >= v.oldest and c > 0 and (newest == nil or index > newest) then newest = index end
    end
    if newest ~= nil then
      if redis.call('HINCRBY', KEYS[i], newest, -1) <= 0 then redis.call('HDEL', KEYS[i], newest) end
      v.count = v.count - 1
      if v.count == 0 then v.first = nil end
    end
  elseif v.kind == "tb" and v.mode == "r" then
    v.tokens = math.min(v.tokens + 1, v.p1)
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', v.tokens), 'ts', now)
    local full_in = 1000
    if v.rate > 0 then full_in = math.ceil((v.p1 - v.tokens) / v.rate) + 1000 end
    redis.call('PEXPIRE', KEYS[i], full_in)
  end
  if v.kind == "sw" then
    if consume then
      if #v.stale > 0 then redis.call('HDEL', KEYS[i], unpack(v.stale)) end
      redis.call('HINCRBY', KEYS[i], v.current, 1)
      redis.call('PEXPIRE', KEYS[i], v.p2 + v.p3)
    end
    local count = v.count + (consume and 1 or 0)
    local first = v.first
    if consume and (first == nil or v.current < first) then first = v.current end
    if first == nil then reset_at = now + v.p2 else reset_at = (first + 1) * v.p3 + v.p2 end
    remaining = math.max(v.p1 - count, 0)
  else
    local after = v.tokens - (consume and 1 or 0)
    if consume then
      redis.call('HSET', KEYS[i], 't', string.format('%.17g', after), 'ts', now)
      local full_in = 1000
      if v.rate > 0 then full_in = math.ceil((v.p1 - after) / v.rate) + 1000 end
      redis.call('PEXPIRE', KEYS[i], full_in)
    end
    if v.rate > 0 then reset_at = now + math.ceil((v.p1 - after) / v.rate) else reset_at = now + 86400000 end
    remaining = math.floor(math.max(after, 0))
  end
  if v.allowed then
    retry_after = 0
  elseif v.kind == "sw" then
    retry_after = math.max(reset_at - now, 1)
  elseif v.rate > 0 then
    retry_after = math.max(math.ceil((1.0 - v.tokens) / v.rate), 1)
  else
    retry_after = 86400000
  end
  out[#out + 1] = v.allowed and 1 or 0
  out[#out + 1] = v.p1
  out[#out + 1] = remaining
  out[#out + 1] = reset_at
  out[#out + 1] = retry_after
end
return out
