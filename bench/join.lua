-- wrk: POST /v1/matchmaking/queue, each request a different user.
-- TOKENS names a file of JWTs, one per line; WRK_THREADS the -t value. Each
-- wrk thread takes every Nth line, so no two requests share a user (wrk
-- prints "Non-2xx or 3xx responses" if any join was refused).
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
  tokens = {}
  local n = 0
  for line in io.lines(os.getenv("TOKENS")) do
    if n % nthreads == id then tokens[#tokens + 1] = line end
    n = n + 1
  end
  next_token = 1
  body = '{"time_control":"5+0","mode":"rated"}'
end

function request()
  local t = tokens[next_token]
  next_token = next_token % #tokens + 1
  return wrk.format("POST", "/v1/matchmaking/queue",
    { ["Authorization"] = "Bearer " .. t, ["Content-Type"] = "application/json" }, body)
end
