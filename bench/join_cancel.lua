-- wrk: each connection joins (POST /v1/matchmaking/queue) and then cancels
-- (DELETE /v1/matchmaking/queue/{id}) the entry it got, user after user,
-- around a ring of users. Run it with one connection per thread (-tN -cN):
-- a thread's next request is the cancel of the join it has just answered.
-- After one turn of the ring every user has joined before, so a rating
-- cache (RATING_API_URL) is warm. TOKENS names a file of JWTs, one per
-- line; WRK_THREADS the -t value (each thread takes every Nth line).
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
  local body = '{"time_control":"5+0","mode":"rated"}'
  joins, tokens = {}, {}
  local n = 0
  for line in io.lines(os.getenv("TOKENS")) do
    if n % nthreads == id then
      joins[#joins + 1] = wrk.format("POST", "/v1/matchmaking/queue",
        { ["Authorization"] = "Bearer " .. line, ["Content-Type"] = "application/json" }, body)
      tokens[#tokens + 1] = line
    end
    n = n + 1
  end
  user, cancel = 1, nil
end

function request()
  if cancel then
    local r = cancel
    cancel = nil
    return r
  end
  local r = joins[user]
  return r
end

function response(status, headers, body)
  local entry = body:match('"queue_entry_id":"([^"]+)"')
  if entry and status == 201 then
    cancel = wrk.format("DELETE", "/v1/matchmaking/queue/" .. entry,
      { ["Authorization"] = "Bearer " .. tokens[user] })
    user = user % #joins + 1
  elseif not entry then
    -- The cancel's answer (or a refusal): on to the next join.
    cancel = nil
  end
end
